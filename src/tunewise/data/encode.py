"""Turn conversations into token ids and labels with the model's own chat template; loss on assistant turns only.

The template is rendered for growing prefixes of the conversation; the text each assistant turn adds (its reply
and end-of-turn token) is labelled, everything else (system, user turns, the assistant header) is -100.
"""
from __future__ import annotations

from dataclasses import dataclass

from tunewise.data.formats import Conversation
from tunewise.data.template import render, with_system
from tunewise.data.templates import drops_system, turn_end
from tunewise.errors import UserError

IGNORE = -100


def _end_of_turn(end: str, reply_text: str) -> str:
    """The part of a reply segment that belongs to the label: up to and including the end-of-turn token `end`."""
    if end in reply_text:
        return reply_text[: reply_text.index(end) + len(end)]
    return reply_text


def encode_conversation(tokenizer, messages: list[dict], end: str | None = None) -> tuple[list[int], list[int]]:
    """(input_ids, labels) for one conversation; labels are IGNORE outside assistant replies. `end` is the
    template's end-of-turn token (templates.turn_end; found here when not given)."""
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
        prompt = render(tokenizer, messages[:i], generation_prompt=True)
        full = render(tokenizer, messages[: i + 1], generation_prompt=False)
        if not (prompt.startswith(rendered) and full.startswith(prompt)):
            raise UserError("the chat template renders the turns before an assistant reply differently once more "
                            "turns follow (Qwen3's own template, for one, drops the reasoning of earlier turns), so "
                            "the reply's labels cannot be placed; pass --template NAME (qwen3 keeps every turn's "
                            "reasoning).")
        add(prompt[len(rendered):], learn=False)
        reply = full[len(prompt):]
        labelled = _end_of_turn(end, reply)
        add(labelled, learn=True)
        add(reply[len(labelled):], learn=False)
        rendered = full
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
        try:
            ids, labels = encode_conversation(tokenizer, with_system(conv.messages, system), end)
        except UserError as e:
            raise UserError(f"{conv.origin}: {e}") from None
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
