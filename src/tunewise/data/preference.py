"""Read preference pairs for `tunewise dpo`, with the same `file:line: reason` errors as `sft` data.

Accepted rows (JSONL, or a JSON list of objects):
  {"prompt": str | messages, "chosen": str | messages, "rejected": str | messages, "system"?: str}
      (TRL's form; a message-list `chosen`/`rejected` holds the one assistant reply)
  {"messages": [..., {"role": "assistant", "content": CHOSEN}], "rejected_response": REJECTED}   (ms-swift)
  {"query", "response", "rejected_response", "system"?, "history"?}                              (ms-swift)
  {"conversations": [ShareGPT turns], "chosen": {"from": "gpt", "value": CHOSEN}, "rejected": {...}, "system"?}
      (LLaMA-Factory's ShareGPT preference form; a ShareGPT row with "rejected_response" works too)
Every row becomes a `Conversation` whose messages are the prompt plus the chosen reply, with the rejected reply in
`extra["rejected_response"]`, and is checked like an `sft` conversation (roles alternate, the prompt ends with a user
turn) plus: both replies non-empty and different, and no tools (dpo does not train tool calls yet). `{{NAME}}` and
`{{AUTHOR}}` are replaced in both replies.
"""
from __future__ import annotations

from pathlib import Path

from tunewise.data import readers, sources
from tunewise.data.encode import EncodeStats
from tunewise.data.template import template_ids, with_system
from tunewise.data.tools import uses_tools
from tunewise.data.formats import (
    BUILTIN_DATASETS,
    SHAREGPT,
    Conversation,
    _optional_text,
    _substitute,
    _text,
    check_placeholders,
    check_sft_conversation,
    to_messages,
    to_turn,
)
from tunewise.errors import UserError

BUILTIN_DIR = Path(__file__).parent / "builtin"
# Built-in preference sets (scripts/build_preference_set.py); `*_heldout` is never trained on.
PREFERENCE_SETS = {
    "concise": BUILTIN_DIR / "concise.jsonl",
    "concise_heldout": BUILTIN_DIR / "concise_heldout.jsonl",
}
REJECTED = "rejected_response"


def read_rows(spec: str, seed: int = 42) -> list[tuple[str, object]]:
    """(file:line, row) for every row of one spec (a path, PATH#N, or a built-in set name)."""
    return sources.read_rows(spec, seed, {**BUILTIN_DATASETS, **PREFERENCE_SETS})


def _messages(value, where: str, name: str) -> list[dict]:
    """A string (one user turn) or a message list, validated like `messages` rows."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list):
        raise UserError(f"{where}: field '{name}' must be a string or a list of messages, "
                        f"got {readers.json_type(value)}.")
    messages, _ = to_messages({"messages": value}, f"{where}: in '{name}'")
    return messages


def _reply(value, where: str, name: str) -> str:
    """A reply: a string, a list holding one assistant message, or one ShareGPT turn from the assistant."""
    if isinstance(value, dict):
        message = to_turn(value, where, name, SHAREGPT)
        if message["role"] != "assistant":
            raise UserError(f"{where}: field '{name}' must be the assistant's turn (\"from\": \"gpt\").")
        return message["content"]
    if isinstance(value, list):
        messages = _messages(value, where, name)
        if len(messages) != 1 or messages[0]["role"] != "assistant":
            raise UserError(f"{where}: field '{name}' must hold exactly one assistant message.")
        return messages[0]["content"]
    return _text(value, where, name)


def to_preference(row, where: str) -> Conversation:
    """Normalise one row to prompt + chosen messages with the rejected reply in extra; see the module docstring."""
    if not isinstance(row, dict):
        raise UserError(f"{where}: expected a JSON object, got {readers.json_type(row)}.")
    if REJECTED in row:  # ms-swift: messages, conversations or query/response, plus rejected_response
        messages, extra = to_messages(row, where)
        extra[REJECTED] = _text(row[REJECTED], where, REJECTED)
        return Conversation(messages, where, extra)
    if "messages" in row:
        raise UserError(f"{where}: missing field '{REJECTED}' (a preference row needs a rejected reply).")
    prompt_key = "conversations" if "conversations" in row else "prompt"
    for key in (prompt_key, "chosen", "rejected"):
        if key not in row:
            raise UserError(f"{where}: missing field '{key}' (expected prompt/chosen/rejected, conversations/chosen/"
                            f"rejected, or messages + {REJECTED}).")
    if prompt_key == "conversations":
        prompt, extra = to_messages({k: v for k, v in row.items() if k not in ("chosen", "rejected")}, where)
    else:
        prompt = _messages(row["prompt"], where, "prompt")
        system = _optional_text(row, "system", where)
        if system and prompt[0]["role"] != "system":
            prompt = [{"role": "system", "content": system}] + prompt
        extra = {k: v for k, v in row.items() if k not in ("prompt", "chosen", "rejected", "system")}
    chosen, rejected = _reply(row["chosen"], where, "chosen"), _reply(row["rejected"], where, "rejected")
    return Conversation(prompt + [{"role": "assistant", "content": chosen}], where, {**extra, REJECTED: rejected})


def check_preference(conv: Conversation) -> None:
    if conv.extra.get("tools") or uses_tools(conv.messages, None):
        raise UserError(f"{conv.origin}: tool calls and tools in preference rows are not supported by dpo yet "
                        "(sft trains them).")
    check_sft_conversation(conv)  # roles alternate and the chosen reply closes the conversation
    chosen, rejected = conv.messages[-1]["content"], conv.extra[REJECTED]
    if not chosen.strip():
        raise UserError(f"{conv.origin}: the chosen reply is empty.")
    if not rejected.strip():
        raise UserError(f"{conv.origin}: the rejected reply is empty.")
    if chosen == rejected:
        raise UserError(f"{conv.origin}: the chosen and rejected replies are identical, so the row teaches nothing.")


def load_preferences(specs: list[str], model_name: list[str] = (), model_author: list[str] = (),
                     seed: int = 42) -> list[Conversation]:
    """Read, substitute placeholders and validate every spec; the first problem raises with its file:line."""
    convs = []
    for spec in specs:
        for where, row in read_rows(spec, seed):
            conv = to_preference(row, where)
            rejected = Conversation(conv.messages[:-1] + [{"role": "assistant", "content": conv.extra[REJECTED]}],
                                    where, conv.extra)
            for c in (conv, rejected):
                _substitute(c, list(model_name), list(model_author))
                check_placeholders(c)
            conv.extra[REJECTED] = rejected.messages[-1]["content"]
            check_preference(conv)
            convs.append(conv)
    return convs


def trl_row(conv: Conversation, system: str | None = None) -> dict:
    """TRL's conversational preference row: prompt messages, then the chosen and the rejected assistant turn."""

    return {"prompt": with_system(conv.messages[:-1], system),
            "chosen": [conv.messages[-1]],
            "rejected": [{"role": "assistant", "content": conv.extra[REJECTED]}]}


def token_lengths(tokenizer, row: dict) -> tuple[int, int, int]:
    """(prompt, prompt + chosen, prompt + rejected) lengths in tokens, rendered with the chat template as TRL does."""
    prompt = row["prompt"]
    return (len(template_ids(tokenizer, prompt, True)), len(template_ids(tokenizer, prompt + row["chosen"])),
            len(template_ids(tokenizer, prompt + row["rejected"])))


def encode_pairs(tokenizer, convs: list[Conversation], system: str | None, max_length: int,
                 truncation: str = "delete") -> tuple[list[dict], EncodeStats]:
    """TRL rows, with pairs longer than --max_length deleted ("delete") or left for TRL to cut at the end
    ("right"); a prompt that alone fills max_length is always deleted (TRL would drop it, and the plan must count
    the rows TRL trains on). Cutting the start ("left") is not offered: it would cut into the prompt."""
    if truncation == "left":
        raise UserError("--truncation_strategy left is not supported by dpo (TRL keeps the start of a sequence); "
                        "use delete or right.")
    stats = EncodeStats(rows=len(convs), unit="pairs", token_note="chosen and rejected")
    rows = []
    for conv in convs:
        row = trl_row(conv, system)
        prompt, chosen, rejected = token_lengths(tokenizer, row)
        if prompt >= max_length or (truncation == "delete" and max(chosen, rejected) > max_length):
            stats.deleted_too_long += 1
            continue
        stats.truncated += max(chosen, rejected) > max_length
        rows.append(row)
        stats.kept += 1
        stats.tokens += min(chosen, max_length) + min(rejected, max_length)
    return rows, stats
