"""Turn rows of training data into conversations, with `file:line: reason` errors for anything malformed.

Accepted rows (readers.py turns each --dataset source into rows of this form):
  {"messages": [{"role": "system"|"user"|"assistant"|"tool", "content": "..."}, ...], "system"?, "tools"?}
      (OpenAI's form: an assistant turn may carry "tool_calls"; ms-swift's "tool_call"/"tool_response" turns work too)
  {"conversations": [{"from": "system"|"human"|"gpt"|"function_call"|"observation", "value": "..."}, ...],
      "system"?, "tools"?}   (ShareGPT; the roles may also be user, assistant or model)
  {"query"|"prompt"|"instruction" (+ "input"), "response"|"output", "system"?, "history"?: [[q, r], ...]}
Every assistant reply must hold text (whitespace is not text) or tool calls, and so must the prompt of a
query/instruction row; tools.py reads the tool calls. A spec is a file (.jsonl, .json, .csv, .parquet), a dataset
folder, a Hub id `owner/name`, or a built-in set name (`self_cognition`); `SPEC#N` samples N rows with a fixed seed,
repeated when N exceeds the data (readers.py).
`{{NAME}}` and `{{AUTHOR}}` are replaced from --model_name/--model_author (Chinese rows take the first value, English
rows the second); a placeholder left after that is an error.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from tunewise.data import tools as tooling
from tunewise.data.readers import json_type, show
from tunewise.data.sources import read_rows
from tunewise.errors import UserError

BUILTIN_DATASETS = {name: Path(__file__).parent / "builtin" / f"{name}.jsonl" for name in ("self_cognition", "tiny_skills")}
ROLES = ("system", "user", "assistant")
_PLACEHOLDER = re.compile(r"\{\{[^{}]*\}\}")
_CJK = re.compile(r"[\u4e00-\u9fff]")


class TurnStyle(NamedTuple):
    """How a list of turns names its role and text, and the role names it may use (-> ours)."""
    role: str
    text: str
    roles: dict


MESSAGES = TurnStyle("role", "content", {**{role: role for role in ROLES}, "tool": tooling.TOOL,
                                          "tool_call": tooling.CALL, "tool_response": tooling.TOOL})
SHAREGPT = TurnStyle("from", "value", {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                                       "model": "assistant", "system": "system", "function_call": tooling.CALL,
                                       "observation": tooling.TOOL})


@dataclass
class Conversation:
    messages: list[dict]
    origin: str  # "file:line", for error messages
    extra: dict = field(default_factory=dict)  # other fields of the row (e.g. "rejected_response" for DPO)
    identity: bool = False  # it held {{NAME}} or {{AUTHOR}}: identity (self-cognition) data
    tools: list[dict] | None = None  # the functions the row's tool calls may use (tools.py), for the chat template


def _text(value, where: str, name: str, reply: bool = False) -> str:
    """A string field; a reply must hold more than whitespace."""
    if not isinstance(value, str):
        raise UserError(f"{where}: field '{name}' must be a string, got {json_type(value)}.")
    if reply and not value.strip():
        raise UserError(f"{where}: field '{name}' is empty; an assistant reply must hold text.")
    return value


def _optional_text(row: dict, name: str, where: str) -> str:
    """A string field that may be absent or null ("")."""
    return "" if row.get(name) is None else _text(row[name], where, name)


def _role(turn, where: str, name: str, style: TurnStyle) -> str:
    """Our role for a turn written in `style` (tools.CALL for a tool call written as a turn of its own)."""
    calls = style is MESSAGES and isinstance(turn, dict) and turn.get("tool_calls") is not None
    if not isinstance(turn, dict) or style.role not in turn or (style.text not in turn and not calls):
        raise UserError(f"{where}: {name} needs '{style.role}' and '{style.text}'.")
    role = style.roles.get(turn[style.role]) if isinstance(turn[style.role], str) else None
    if role is None:
        raise UserError(f"{where}: {name}.{style.role} is {show(turn[style.role])}; expected one of "
                        f"{', '.join(style.roles)}.")
    if calls and role != "assistant":
        raise UserError(f"{where}: {name} has 'tool_calls' but role {show(turn[style.role])}; only an assistant "
                        "turn calls tools.")
    return role


def to_turn(turn, where: str, name: str, style: TurnStyle) -> dict:
    """One message from a turn written in `style`; `name` says where it stands in the row. A tool call written as
    a turn of its own comes back as an assistant message without text (tools.add_call merges it)."""
    role = _role(turn, where, name, style)
    text = f"{name}.{style.text}"
    if role == tooling.CALL:
        return {"role": "assistant", "content": "",
                "tool_calls": tooling.parse_tool_calls(turn[style.text], where, text)}
    if role == tooling.TOOL:
        return tooling.tool_result(turn, _text(turn[style.text], where, text))
    if role == "assistant" and style is MESSAGES and turn.get("tool_calls") is not None:
        content = turn.get("content")  # OpenAI: null (or absent) beside tool calls
        return {"role": role, "content": "" if content is None else _text(content, where, text),
                "tool_calls": tooling.parse_tool_calls(turn["tool_calls"], where, f"{name}.tool_calls"),
                **_reasoning(turn, where, name)}
    message = {"role": role, "content": _text(turn[style.text], where, text, reply=role == "assistant")}
    return {**message, **_reasoning(turn, where, name)} if role == "assistant" else message


def _reasoning(turn: dict, where: str, name: str) -> dict:
    """An assistant turn's "reasoning_content" (Qwen3 / DeepSeek-R1 style; --template qwen3 renders it in <think>)."""
    if turn.get("reasoning_content") in (None, ""):
        return {}
    return {"reasoning_content": _text(turn["reasoning_content"], where, f"{name}.reasoning_content")}


def _turn_list(row: dict, key: str, where: str, style: TurnStyle) -> list[dict]:
    """The `key` list of turns, after the row's "system" field if it has one."""
    turns = row[key]
    if not isinstance(turns, list) or not turns:
        raise UserError(f"{where}: field '{key}' must be a non-empty list, got {show(turns, 20)}.")
    system = _optional_text(row, "system", where)
    out = [{"role": "system", "content": system}] if system else []
    for i, turn in enumerate(turns):
        name = f"{key}[{i}]"
        if _role(turn, where, name, style) == tooling.CALL:
            tooling.add_call(out, to_turn(turn, where, name, style)["tool_calls"])
        else:
            out.append(to_turn(turn, where, name, style))
    return out


def to_messages(row, where: str) -> tuple[list[dict], dict]:
    """Normalise one row to a message list; returns (messages, remaining fields)."""
    if not isinstance(row, dict):
        raise UserError(f"{where}: expected a JSON object, got {json_type(row)}.")
    for key, style in (("messages", MESSAGES), ("conversations", SHAREGPT)):
        if key in row:
            return _turn_list(row, key, where, style), {k: v for k, v in row.items() if k not in (key, "system")}

    query_key = next((k for k in ("query", "prompt", "instruction") if k in row), None)
    if query_key is None and "input" not in row:  # an alpaca row's empty instruction may be left out (a table's is)
        raise UserError(f"{where}: missing field 'query' (or 'prompt', 'instruction', 'messages', 'conversations').")
    query = _text(row[query_key], where, query_key) if query_key else ""
    more = _optional_text(row, "input", where)
    if not query.strip() and not more.strip():
        both = (f"fields '{query_key}' and 'input' are" if query_key and "input" in row
                else f"field '{query_key or 'input'}' is")
        raise UserError(f"{where}: {both} empty; the prompt must hold text.")
    out = []
    system = _optional_text(row, "system", where)
    if system:
        out.append({"role": "system", "content": system})
    history = [] if row.get("history") is None else row["history"]
    if not isinstance(history, list):
        raise UserError(f"{where}: field 'history' must be a list of [query, response] pairs.")
    for i, pair in enumerate(history):
        if not (isinstance(pair, list) and len(pair) == 2):
            raise UserError(f"{where}: history[{i}] must be a [query, response] pair.")
        out += [{"role": "user", "content": _text(pair[0], where, f"history[{i}][0]")},
                {"role": "assistant", "content": _text(pair[1], where, f"history[{i}][1]", reply=True)}]
    out.append({"role": "user", "content": "\n".join(part for part in (query, more) if part)})
    response_key = next((k for k in ("response", "output") if k in row), None)
    if response_key is not None:
        out.append({"role": "assistant", "content": _text(row[response_key], where, response_key, reply=True)})
    used = {query_key, "input", "system", "history", response_key}
    return out, {k: v for k, v in row.items() if k not in used}


def check_sft_conversation(conv: Conversation) -> None:
    """A system turn only first; then user and assistant alternate, starting with the user, except that an assistant
    turn with tool calls is followed by their results (tool turns) and then the assistant again; the last turn is the
    assistant's."""
    msgs = [m for m in conv.messages if m["role"] != "system"]
    if any(m["role"] == "system" for m in conv.messages[1:]):
        raise UserError(f"{conv.origin}: a system message may only come first.")
    if not msgs or msgs[-1]["role"] != "assistant":
        raise UserError(f"{conv.origin}: missing field 'response' (the conversation must end with an assistant reply).")
    tooling.check_tool_turns(conv.origin, msgs, conv.tools)
    before = {"user": (None, "assistant"), "assistant": ("user", tooling.TOOL), tooling.TOOL: ("assistant", "tool")}
    for i, m in enumerate(msgs):
        if (msgs[i - 1]["role"] if i else None) not in before[m["role"]]:
            raise UserError(f"{conv.origin}: messages must alternate user/assistant; message {i + 1} is '{m['role']}'.")


def _substitute(conv: Conversation, names: list[str], authors: list[str]) -> None:
    text = "".join(m["content"] for m in conv.messages)
    if "{{" not in text:
        return
    conv.identity = "{{NAME}}" in text or "{{AUTHOR}}" in text
    tag = conv.extra.get("tag")
    chinese = tag == "zh" if tag in ("zh", "en") else bool(_CJK.search(text))
    pick = (lambda v: v[0] if chinese or len(v) == 1 else v[1])
    for m in conv.messages:
        if names:
            m["content"] = m["content"].replace("{{NAME}}", pick(names))
        if authors:
            m["content"] = m["content"].replace("{{AUTHOR}}", pick(authors))


def check_placeholders(conv: Conversation) -> None:
    for i, m in enumerate(conv.messages):
        left = _PLACEHOLDER.search(m["content"])
        if left:
            hint = " (set --model_name and --model_author)" if left.group() in ("{{NAME}}", "{{AUTHOR}}") else ""
            raise UserError(f"{conv.origin}: messages[{i}].content still holds the placeholder "
                            f"{show(left.group(), 40, quote=False)}{hint}.")


def read_spec(spec: str, seed: int = 42) -> list[Conversation]:
    """All rows of one dataset spec, normalised, in file order (or sampled for PATH#N)."""
    convs = []
    for where, row in read_rows(spec, seed, BUILTIN_DATASETS):
        messages, extra = to_messages(row, where)
        tools = tooling.parse_tools(extra.pop("tools", None), where)
        convs.append(Conversation(messages, where, extra, tools=tools))
    return convs


def load_conversations(specs: list[str], model_name: list[str] = (), model_author: list[str] = (),
                       seed: int = 42, check=check_sft_conversation) -> list[Conversation]:
    """Read, substitute placeholders and validate every spec; the first problem raises with its file:line."""
    convs = []
    for spec in specs:
        for conv in read_spec(spec, seed):
            _substitute(conv, list(model_name), list(model_author))
            check_placeholders(conv)
            check(conv)
            convs.append(conv)
    return convs


def load_rows_as(specs: list[str], model_name, model_author, seed: int, convert, check,
                 sets: dict | None = None) -> list[Conversation]:
    """Every row of every spec (built-in sets, and `sets` beside them) made a Conversation by `convert(row, where)`,
    its placeholders substituted and checked, then checked by `check`; the first problem raises with its file:line.
    GRPO's prompts and KTO's unpaired rows read this way."""
    convs = []
    for spec in specs:
        for where, row in read_rows(spec, seed, {**BUILTIN_DATASETS, **(sets or {})}):
            conv = convert(row, where)
            _substitute(conv, list(model_name), list(model_author))
            check_placeholders(conv)
            check(conv)
            convs.append(conv)
    return convs
