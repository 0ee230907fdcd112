"""Turn conversations into token ids and labels with the model's own chat template; loss on assistant turns only.

The template is rendered for growing prefixes of the conversation; the text each assistant turn adds (its reply
and end-of-turn token) is labelled, everything else (system, user turns, the assistant header) is -100. A row with
tools is rendered as `apply_chat_template(messages, tools=...)` renders it: an assistant turn's tool calls are part
of its reply and trained, the tool results (the template's own turns for them) are not. A template that drops the
tools, the calls or their results is refused: training on such text would teach the model nothing of them.
"""
from __future__ import annotations

from dataclasses import dataclass

from tunewise.data.formats import Conversation
from tunewise.data.readers import show
from tunewise.data.template import render, with_system
from tunewise.data.templates import drops_system, turn_end
from tunewise.data.tools import uses_tools
from tunewise.errors import UserError, brief

IGNORE = -100


def _end_of_turn(end: str, reply_text: str) -> str:
    """The part of a reply segment that belongs to the label: up to and including the end-of-turn token `end`."""
    if end in reply_text:
        return reply_text[: reply_text.index(end) + len(end)]
    return reply_text


def _render(tokenizer, messages: list[dict], tools: list[dict] | None, generation_prompt: bool, where: str) -> str:
    if not tools and not uses_tools(messages, None):
        return render(tokenizer, messages, generation_prompt=generation_prompt)
    if not messages:
        return ""
    try:
        return tokenizer.apply_chat_template(messages, tools=tools, tokenize=False,
                                             add_generation_prompt=generation_prompt)
    except Exception as e:  # a template's raise_exception, or one that cannot read a turn without text
        raise UserError(f"{where}: the model's chat template cannot render this row's tool calls ({brief(e, 200)}); "
                        "use a model whose template supports tools (such as Qwen2.5-Instruct).") from None


def _not_rendered(where: str, what: str) -> UserError:
    return UserError(f"{where}: the model's chat template does not render tools: {what} is missing from the text it "
                     "renders for this row; use a model whose chat template supports tools (such as Qwen2.5-Instruct).")


def encode_conversation(tokenizer, messages: list[dict], tools: list[dict] | None = None,
                        where: str = "conversation", end: str | None = None) -> tuple[list[int], list[int]]:
    """(input_ids, labels) for one conversation; labels are IGNORE outside assistant replies. `where` names the row
    in errors; `end` is the template's end-of-turn token (templates.turn_end; found here when not given)."""
    end = end or turn_end(tokenizer)
    ids: list[int] = []
    labels: list[int] = []
    rendered = ""

    def add(text: str, learn: bool):
        piece = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
        ids.extend(piece)
        labels.extend(piece if learn else [IGNORE] * len(piece))

    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = _render(tokenizer, messages[:i], tools, True, where)
        full = _render(tokenizer, messages[: i + 1], tools, False, where)
        if not (prompt.startswith(rendered) and full.startswith(prompt)):
            raise UserError(f"{where}: the chat template renders the turns before an assistant reply differently once more "
                            "turns follow (Qwen3's own template, for one, drops the reasoning of earlier turns), so "
                            "the reply's labels cannot be placed; pass --template NAME (qwen3 keeps every turn's "
                            "reasoning).")
        add(prompt[len(rendered):], learn=False)
        reply = full[len(prompt):]
        labelled = _end_of_turn(end, reply)
        if message.get("tool_calls"):  # the calls must change the trained text, else the template dropped them
            bare = {key: value for key, value in message.items() if key != "tool_calls"}
            without = _render(tokenizer, messages[:i] + [bare], tools, False, where)[len(prompt):]
            if _end_of_turn(end, without) == labelled:
                names = ", ".join(call["function"]["name"] for call in message["tool_calls"])
                raise _not_rendered(where, f"the assistant's call of {names}")
        for m in messages[:i]:
            if m["role"] == "tool" and m["content"].strip() not in prompt:
                raise _not_rendered(where, f"the tool result {show(m['content'], 40)}")
        add(labelled, learn=True)
        add(reply[len(labelled):], learn=False)
        rendered = full
    if tools and _render(tokenizer, messages, tools, False, where) == _render(tokenizer, messages, None, False, where):
        raise _not_rendered(where, f"field 'tools' ({', '.join(t['function']['name'] for t in tools)})")
    return ids, labels


@dataclass
class EncodeStats:
    """What encoding kept of a data set; sft counts rows and trained tokens, dpo pairs (unit, token_note)."""
    rows: int = 0
    kept: int = 0
    deleted_too_long: int = 0
    truncated: int = 0
    tokens: int = 0
    label_tokens: int = 0
    identity_rows: int = 0  # kept rows of identity data ({{NAME}}/{{AUTHOR}} placeholders)
    unit: str = "rows"
    token_note: str | None = None

    def summary(self) -> str:
        note = self.token_note or f"{self.label_tokens} trained"
        parts = [f"{self.kept}/{self.rows} {self.unit} kept", f"{self.tokens} tokens ({note})"]
        if self.identity_rows:
            parts.append(f"{self.identity_rows} of them identity rows")
        if self.deleted_too_long:
            parts.append(f"{self.deleted_too_long} deleted as longer than --max_length")
        if self.truncated:
            parts.append(f"{self.truncated} truncated")
        return ", ".join(parts)


def encode_dataset(tokenizer, convs: list[Conversation], system: str | None, max_length: int,
                   truncation: str = "delete") -> tuple[list[dict], EncodeStats]:
    """Encoded rows {input_ids, labels, attention_mask}; over-long rows deleted or truncated as asked."""
    stats = EncodeStats(rows=len(convs))
    rows = []
    end = turn_end(tokenizer)
    if drops_system(tokenizer):
        with_one = next((c for c in convs if c.messages and c.messages[0]["role"] == "system"), None)
        if system or with_one:
            where = "--system" if system else f"{with_one.origin}: its system message"
            raise UserError(f"{where}: the chat template leaves system messages out, so this system prompt would "
                            "never reach the model; pass --template NAME, or put the instructions in the user turn.")
    for conv in convs:
        ids, labels = encode_conversation(tokenizer, with_system(conv.messages, system), conv.tools, conv.origin, end)
        if len(ids) > max_length:
            if truncation == "delete":
                stats.deleted_too_long += 1
                continue
            keep = slice(-max_length, None) if truncation == "left" else slice(0, max_length)
            ids, labels = ids[keep], labels[keep]
            stats.truncated += 1
        if all(label == IGNORE for label in labels):
            stats.deleted_too_long += 1
            continue
        rows.append({"input_ids": ids, "labels": labels, "attention_mask": [1] * len(ids)})
        stats.kept += 1
        stats.identity_rows += conv.identity
        stats.tokens += len(ids)
        stats.label_tokens += sum(label != IGNORE for label in labels)
    return rows, stats
