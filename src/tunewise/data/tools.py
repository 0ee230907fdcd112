"""Tool calling in training rows, normalised to the form transformers' `apply_chat_template(messages, tools=...)`
renders (https://huggingface.co/docs/transformers/chat_extras#tools):

  tools:  [{"type": "function", "function": {"name", "description"?, "parameters"?}}, ...]
  assistant turn that calls:  {"role": "assistant", "content": "" | text,
                               "tool_calls": [{"type": "function", "function": {"name", "arguments": {...}}}]}
  tool result:  {"role": "tool", "content": text, "tool_call_id"?, "name"?}

Accepted on the way in: OpenAI rows (`tool_calls` with `arguments` as a JSON string or an object, `tool` turns),
ms-swift rows (`tool_call` turns whose content is {"name", "arguments"} as JSON, `tool_response` turns, `tools` as a
JSON string) and ShareGPT rows as LLaMA-Factory writes them (`function_call` / `observation` turns, `tools` of bare
{"name", "description", "parameters"} objects).
"""
from __future__ import annotations

import json

from tunewise.data.readers import json_type, show
from tunewise.errors import UserError

CALL = "tool_call"  # the role a ms-swift `tool_call` / ShareGPT `function_call` turn maps to before it is merged
TOOL = "tool"


def _json(value, where: str, name: str):
    """A JSON string's value (or the value itself when it is not a string)."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as e:
        raise UserError(f"{where}: field '{name}' is a string that is not valid JSON ({e.msg}: column {e.colno}).") \
            from None
    except (RecursionError, ValueError):
        raise UserError(f"{where}: field '{name}' holds JSON too deeply nested, or a number too long, to read.") \
            from None


def _name(value, where: str, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{where}: field '{name}' must be a function name (a non-empty string), got {show(value, 30)}.")
    return value


def parse_tools(value, where: str) -> list[dict] | None:
    """The row's `tools` field: a list (or a JSON string of a list) of function schemas; None when absent or empty."""
    tools = _json(value, where, "tools")
    if tools is None or tools == []:
        return None
    if not isinstance(tools, list):
        raise UserError(f"{where}: field 'tools' must be a list of function schemas, got {json_type(tools)}.")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise UserError(f"{where}: tools[{i}] must be an object, got {json_type(tool)}.")
        function = tool.get("function", tool)
        if not isinstance(function, dict) or "name" not in function:
            raise UserError(f"{where}: tools[{i}] needs 'name' (or 'function': {{'name': ...}}).")
        _name(function["name"], where, f"tools[{i}].name")
        out.append(tool if "function" in tool else {"type": "function", "function": tool})
    return out


def parse_tool_calls(value, where: str, name: str) -> list[dict]:
    """A non-empty list of calls, each {"function": {"name", "arguments"}} (OpenAI) or {"name", "arguments"}."""
    calls = _json(value, where, name)
    if isinstance(calls, dict):
        calls = [calls]
    if not isinstance(calls, list) or not calls:
        raise UserError(f"{where}: field '{name}' must be a non-empty list of tool calls, got {show(calls, 30)}.")
    out = []
    for i, call in enumerate(calls):
        here = f"{name}[{i}]"
        if not isinstance(call, dict):
            raise UserError(f"{where}: {here} must be an object, got {json_type(call)}.")
        function = call.get("function", call)
        if not isinstance(function, dict) or "name" not in function:
            raise UserError(f"{where}: {here} needs 'name' (or 'function': {{'name': ...}}).")
        arguments = _json(function.get("arguments"), where, f"{here}.arguments")
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise UserError(f"{where}: field '{here}.arguments' must be an object (or a JSON string of one), "
                            f"got {json_type(arguments)}.")
        parsed = {"type": "function", "function": {"name": _name(function["name"], where, f"{here}.name"),
                                                   "arguments": arguments}}
        if isinstance(call.get("id"), str):
            parsed["id"] = call["id"]
        out.append(parsed)
    return out


def tool_result(turn: dict, content: str) -> dict:
    """A `tool` message, keeping the call id and function name it answers when the row gives them."""
    message = {"role": TOOL, "content": content}
    for key in ("tool_call_id", "name"):
        if isinstance(turn.get(key), str):
            message[key] = turn[key]
    return message


def add_call(messages: list[dict], calls: list[dict]) -> None:
    """A ms-swift `tool_call` / ShareGPT `function_call` turn: it joins the assistant turn just before it (text, or
    calls of its own: parallel calls are consecutive turns), else it is an assistant turn of its own."""
    if messages and messages[-1]["role"] == "assistant":
        messages[-1].setdefault("tool_calls", []).extend(calls)
    else:
        messages.append({"role": "assistant", "content": "", "tool_calls": calls})


def uses_tools(messages: list[dict], tools) -> bool:
    return bool(tools) or any(m.get("tool_calls") or m["role"] == TOOL for m in messages)


def check_tool_turns(origin: str, messages: list[dict], tools: list[dict] | None) -> None:
    """Every call names a listed tool (when the row lists any), and the turn after calls is their result; messages
    are without the system turn, numbered from 1 as in check_sft_conversation's errors."""
    listed = {t["function"]["name"] for t in tools or []}
    for i, m in enumerate(messages):
        for call in m.get("tool_calls", []):
            if listed and call["function"]["name"] not in listed:
                raise UserError(f"{origin}: message {i + 1} calls the tool '{call['function']['name']}', which "
                                f"field 'tools' does not list (it lists {', '.join(sorted(listed))}).")
        follows = messages[i + 1]["role"] if i + 1 < len(messages) else None
        if m.get("tool_calls") and follows not in (TOOL, None):
            raise UserError(f"{origin}: message {i + 2} is '{follows}'; the tool calls of message {i + 1} need "
                            f"their result (a 'tool' turn) first.")
        if m["role"] == TOOL and (i == 0 or not (messages[i - 1].get("tool_calls") or messages[i - 1]["role"] == TOOL)):
            raise UserError(f"{origin}: message {i + 1} is a tool result, but message {i} made no tool call.")
