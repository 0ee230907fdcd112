"""Read GRPO prompt rows (for `tunewise rlhf --rlhf_type grpo`), with the same `file:line: reason` errors as `sft` data.

Accepted rows (JSONL, JSON, CSV, Parquet, a dataset folder or Hub id, or a built-in set; SPEC#N samples):
  {"messages": [..., {"role": "user", ...}], "solution"?: ...}          (ms-swift's GRPO form; any other field too)
  {"conversations": [ShareGPT turns], "solution"?, "system"?}
  {"query"|"prompt"|"instruction"|"question"|"problem" (+ "input"), "response"|"output"|"answer"?, "system"?,
   "history"?, "solution"?}                                              (ms-swift's query and response names)
  {"prompt": [messages], "solution"?}                                   (TRL's conversational prompt)
A trailing assistant reply is not part of the prompt (ms-swift removes it too); it serves as the row's `solution`
when the row has none, and so does an "answer" field. A number as solution is read as its text. Every other field
stays a column, which TRL passes to the reward functions by name (ms-swift: "GRPO passes through all additional
field content to the ORM").
The prompt is checked like an `sft` conversation without its last reply: a system message only first, roles
alternating, ending with the user's turn. `{{NAME}}`/`{{AUTHOR}}` are replaced in it.

Built-in sets: `additions`, the embedded model's additions a+b (a, b < 50) outside the 200 held-out pairs, each with
its sum as solution (scripts/make_grpo_additions.py); `additions_hard`, those additions in each of the five trained
phrasings that the embedded model answers exactly with probability below 0.9 (1,051 prompts; the others give GRPO
groups of all-correct completions, which carry no gradient; scripts/make_grpo_hard_additions.py).
"""
from __future__ import annotations

import numbers
from pathlib import Path

from tunewise.data import sources
from tunewise.data.formats import BUILTIN_DATASETS, Conversation, check_sft_conversation, load_rows_as, to_messages
from tunewise.data.readers import json_type
from tunewise.data.template import with_system
from tunewise.data.tools import uses_tools
from tunewise.errors import UserError

_BUILTIN = Path(__file__).parent / "builtin"
PROMPT_SETS = {"additions": _BUILTIN / "additions.jsonl", "additions_hard": _BUILTIN / "additions_hard.jsonl"}
SOLUTION = "solution"
ORIGIN = "row_origin"  # the column holding each row's file:line (rewards name the row with it)
_QUERY_ALIASES = ("question", "problem")  # ms-swift's query names beyond ours
_PROMPT_KEYS = ("messages", "conversations", "query", "prompt", "instruction", "input")


def read_rows(spec: str, seed: int = 42) -> list[tuple[str, object]]:
    """(file:line, row) for every row of one spec (a path, PATH#N, Hub id, or a built-in set name)."""
    return sources.read_rows(spec, seed, {**BUILTIN_DATASETS, **PROMPT_SETS})


def _solution_text(value, where: str, name: str) -> str:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise UserError(f"{where}: field '{name}' must be a string or a number, got {json_type(value)}.")
    if not value.strip():
        raise UserError(f"{where}: field '{name}' is empty; a solution must hold the answer.")
    return value


def to_prompt(row, where: str) -> Conversation:
    """One row as a prompt (messages ending with the user's turn) with `solution` (or None) and the other fields in
    `extra`; see the module docstring."""
    if not isinstance(row, dict):
        raise UserError(f"{where}: expected a JSON object, got {json_type(row)}.")
    if isinstance(row.get("prompt"), list):  # TRL's conversational prompt
        messages, _ = to_messages({"messages": row["prompt"], "system": row.get("system")}, f"{where}: in 'prompt'")
        extra = {k: v for k, v in row.items() if k not in ("prompt", "system")}
    else:
        alias = next((k for k in _QUERY_ALIASES if k in row), None)
        if alias and not any(k in row for k in _PROMPT_KEYS):
            row = {"query": row[alias], **{k: v for k, v in row.items() if k != alias}}
        elif not any(k in row for k in _PROMPT_KEYS):
            raise UserError(f"{where}: missing the prompt: no field 'messages', 'conversations', 'query', 'prompt', "
                            "'instruction', 'question' or 'problem'.")
        messages, extra = to_messages(row, where)
    reply = None
    if messages and messages[-1]["role"] == "assistant":
        reply = messages.pop()["content"]
    solution = extra.get(SOLUTION)
    if solution is not None:
        solution = _solution_text(solution, where, SOLUTION)
    elif reply is not None:
        solution = reply
    elif extra.get("answer") is not None:
        solution = _solution_text(extra["answer"], where, "answer")
    extra[SOLUTION] = solution
    return Conversation(messages, where, extra)


def check_prompt(conv: Conversation) -> None:
    """The prompt is an `sft` conversation without its last reply; no tools yet."""
    if conv.extra.get("tools") or uses_tools(conv.messages, None):
        raise UserError(f"{conv.origin}: tool calls and tools in GRPO prompts are not supported yet.")
    if not any(m["role"] == "user" for m in conv.messages):
        raise UserError(f"{conv.origin}: the prompt has no user turn.")
    if conv.messages[-1]["role"] != "user":
        raise UserError(f"{conv.origin}: the prompt must end with the user's turn, not '{conv.messages[-1]['role']}'.")
    check_sft_conversation(Conversation(conv.messages + [{"role": "assistant", "content": "-"}], conv.origin))


def load_prompts(specs: list[str], model_name: list[str] = (), model_author: list[str] = (),
                 seed: int = 42) -> list[Conversation]:
    """Read, substitute placeholders and validate every spec; the first problem raises with its file:line."""
    return load_rows_as(specs, model_name, model_author, seed, to_prompt, check_prompt, PROMPT_SETS)


def trl_rows(convs: list[Conversation], system: str | None = None) -> list[dict]:
    """TRL GRPOTrainer rows: `prompt` (messages, `system` added unless the row has its own), `solution`, every other
    field, and `row_origin` (file:line). All rows get the same columns (a field a row lacks is None), as a
    `datasets.Dataset` needs."""
    rows = [{"prompt": with_system(c.messages, system), **c.extra, ORIGIN: c.origin} for c in convs]
    columns = list(dict.fromkeys(k for r in rows for k in r))
    return [{k: r.get(k) for k in columns} for r in rows]

