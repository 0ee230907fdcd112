"""Read unpaired (KTO) rows for `tunewise rlhf --rlhf_type kto`, with the same `file:line: reason` errors as `sft` data.

Accepted rows (every source `sft` reads):
  {"messages": [..., {"role": "assistant", "content": REPLY}], "label": true|false}      (ms-swift's KTO form)
  {"conversations": [ShareGPT turns], "label"} and {"query", "response", "system"?, "history"?, "label"}
  {"prompt": str | messages, "completion": str | messages, "label"}                     (TRL's unpaired form)
`label` says whether the reply is desirable: true/false, 1/0, or the strings "true"/"false"/"1"/"0" (a CSV cell).
Each row is checked like an `sft` conversation (it ends with the assistant's reply, which is non-empty); tool calls
are not supported yet. `{{NAME}}`/`{{AUTHOR}}` are replaced.
"""
from __future__ import annotations

from tunewise.data.formats import Conversation, check_sft_conversation, load_rows_as, to_messages
from tunewise.data.readers import json_type, show
from tunewise.data.template import with_system
from tunewise.data.tools import uses_tools
from tunewise.errors import UserError

LABEL = "label"
_TRUE, _FALSE = ("true", "1"), ("false", "0")


def parse_label(value, where: str) -> bool:
    """A KTO label: true/false, 1/0, or those as strings (any case)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise UserError(f"{where}: field '{LABEL}' is {show(value, 30)}; a KTO label is true (a desirable reply) or "
                    f"false (an undesirable one){'' if value is not None else ', not null'}.")


def _as_messages(value, where: str, name: str) -> list[dict]:
    if isinstance(value, str):
        return [{"role": "user" if name == "prompt" else "assistant", "content": value}]
    if not isinstance(value, list):
        raise UserError(f"{where}: field '{name}' must be a string or a list of messages, got {json_type(value)}.")
    messages, _ = to_messages({"messages": value}, f"{where}: in '{name}'")
    return messages


def to_unpaired(row, where: str) -> Conversation:
    """One row as prompt + reply messages with its label in `extra["label"]`; see the module docstring."""
    if not isinstance(row, dict):
        raise UserError(f"{where}: expected a JSON object, got {json_type(row)}.")
    if LABEL not in row:
        raise UserError(f"{where}: missing field '{LABEL}' (a KTO row says whether its reply is desirable: "
                        "\"label\": true or false).")
    label = parse_label(row[LABEL], where)
    if "completion" in row and "prompt" in row:  # TRL's form
        messages = _as_messages(row["prompt"], where, "prompt")
        system = row.get("system")
        if isinstance(system, str) and system and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": system}] + messages
        reply = _as_messages(row["completion"], where, "completion")
        if len(reply) != 1 or reply[0]["role"] != "assistant":
            raise UserError(f"{where}: field 'completion' must hold exactly one assistant message.")
        extra = {k: v for k, v in row.items() if k not in ("prompt", "completion", "system", LABEL)}
        messages = messages + reply
    else:
        messages, extra = to_messages({k: v for k, v in row.items() if k != LABEL}, where)
    return Conversation(messages, where, {**extra, LABEL: label})


def check_unpaired(conv: Conversation) -> None:
    if conv.extra.get("tools") or uses_tools(conv.messages, None):
        raise UserError(f"{conv.origin}: tool calls and tools in KTO rows are not supported yet (sft trains them).")
    check_sft_conversation(conv)


def load_unpaired(specs: list[str], model_name: list[str] = (), model_author: list[str] = (),
                  seed: int = 42) -> list[Conversation]:
    """Read, substitute placeholders and validate every spec; the first problem raises with its file:line."""
    return load_rows_as(specs, model_name, model_author, seed, to_unpaired, check_unpaired)


def label_counts(convs: list[Conversation]) -> tuple[int, int]:
    """(desirable, undesirable) rows: TRL's KTO weights the two losses by them (desirable_weight,
    undesirable_weight), and a set of one kind only is worth saying in the plan."""
    good = sum(bool(c.extra[LABEL]) for c in convs)
    return good, len(convs) - good


def trl_row(conv: Conversation, system: str | None = None) -> dict:
    """TRL's conversational unpaired row: prompt messages, the reply as a one-message completion, the label."""
    return {"prompt": with_system(conv.messages[:-1], system), "completion": [conv.messages[-1]],
            "label": bool(conv.extra[LABEL])}
