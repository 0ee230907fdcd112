"""One generation in a batch and what happens to its row at each step.

`Request` is what a client submits (prompt ids, adapter, sampling, stop strings) and the state the worker keeps
for it; `Delta`, `Done` and `Failed` are the events sent to its callback. Per step, `sample` picks each row's next
token with that request's own parameters (greedy, or temperature / top-k / top-p with its seeded generator,
repetition penalty) and `accept` detokenizes it incrementally, checks end-of-turn tokens, stop strings and
`max_new_tokens`, and emits the new text. The scheduler that batches the rows is serve/batching.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from tunewise.args import Sampling
from tunewise.infer.engine import Reply


@dataclass
class Delta:
    text: str


@dataclass
class Done:
    reply: Reply


@dataclass
class Failed:
    message: str


Event = Delta | Done | Failed


class Detokenizer:
    """Incremental detokenization that never emits half a character (vLLM's prefix/read offsets)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix = 0
        self.read = 0
        self.text = ""

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def add(self, token: int) -> None:
        self.ids.append(token)
        before = self._decode(self.ids[self.prefix:self.read])
        after = self._decode(self.ids[self.prefix:])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.text += after[len(before):]
            self.prefix, self.read = self.read, len(self.ids)

    def flush(self) -> None:
        """At the end: whatever is left, even an incomplete character."""
        before = self._decode(self.ids[self.prefix:self.read])
        after = self._decode(self.ids[self.prefix:])
        if len(after) > len(before):
            self.text += after[len(before):]
        self.prefix = self.read = len(self.ids)


@dataclass
class Request:
    """One generation: prompt ids, adapter, sampling and stop strings; events go to `emit` (worker thread)."""

    prompt_ids: list[int]
    emit: Callable[[Event], None]
    sampling: Sampling = field(default_factory=Sampling)
    stop: list[str] = field(default_factory=list)
    adapter: str | None = None
    ignore_eos: bool = False
    id: int = 0
    cancelled: bool = False
    # state owned by the worker thread
    generated: list[int] = field(default_factory=list)
    emitted: int = 0
    checked: int = 0
    detok: Detokenizer | None = None
    generator: object = None
    finished: bool = False

    def cancel(self) -> None:
        self.cancelled = True


def sample(logits, rows: list[Request]):
    """The next token of each row ([B] long tensor) from its logits ([B, V] float, penalized in place)."""
    import torch

    for i, r in enumerate(rows):
        penalty = r.sampling.repetition_penalty
        if penalty and penalty != 1.0:
            seen = torch.tensor(sorted(set(r.prompt_ids) | set(r.generated)), dtype=torch.long)
            score = logits[i, seen]
            logits[i, seen] = torch.where(score < 0, score * penalty, score / penalty)
    tokens = logits.argmax(-1)
    sampled = [i for i, r in enumerate(rows) if r.sampling.temperature > 0]
    if not sampled:
        return tokens
    sub = logits[sampled]
    temps = torch.tensor([rows[i].sampling.temperature for i in sampled], dtype=sub.dtype)
    sub = sub / temps[:, None]
    sorted_logits, order = sub.sort(dim=-1, descending=True)
    vocab = sub.shape[-1]
    ks = torch.tensor([rows[i].sampling.top_k if (rows[i].sampling.top_k or 0) > 0 else vocab for i in sampled])
    ranks = torch.arange(vocab)[None, :]
    sorted_logits = sorted_logits.masked_fill(ranks >= ks[:, None], float("-inf"))
    top_p = torch.tensor([rows[i].sampling.top_p if rows[i].sampling.top_p is not None else 1.0 for i in sampled],
                         dtype=sub.dtype)
    probs = sorted_logits.softmax(-1)
    before = probs.cumsum(-1) - probs  # mass of the better tokens; the best one is always kept
    sorted_logits = sorted_logits.masked_fill(before > top_p[:, None], float("-inf"))
    probs = sorted_logits.softmax(-1)
    for j, i in enumerate(sampled):
        pick = torch.multinomial(probs[j], 1, generator=rows[i].generator)
        tokens[i] = order[j, pick[0]]
    return tokens


def accept(rows: list[Request], tokens: list[int], stop_ids: set[int], max_length: int) -> None:
    """Append each row's token, emit its new text, and finish the rows that are done (Done after the last Delta).

    Holds back the last characters that could still start a stop string. Call with the tokenizer lock held."""
    for r, token in zip(rows, tokens):
        if r.finished:
            continue
        r.generated.append(token)
        reason = None
        if token in stop_ids and not r.ignore_eos:
            reason = "stop"
        else:
            r.detok.add(token)
            if len(r.generated) >= r.sampling.max_new_tokens or \
                    len(r.prompt_ids) + len(r.generated) >= max_length:
                reason = "length"
        if reason is not None:
            r.detok.flush()
        text = r.detok.text
        if r.stop:
            start = max(0, r.checked - max(len(s) for s in r.stop) + 1)
            hits = [p for p in (text.find(s, start) for s in r.stop) if p >= 0]
            r.checked = len(text)
            if hits:
                text, reason = text[:min(hits)], "stop"
        if reason is not None:
            if len(text) > r.emitted:
                r.emit(Delta(text[r.emitted:]))
            r.finished = True
            r.emit(Done(Reply(text, reason, len(r.prompt_ids), len(r.generated))))
            continue
        safe = len(text) - (max(len(s) for s in r.stop) - 1 if r.stop else 0)
        if safe > r.emitted:
            r.emit(Delta(text[r.emitted:safe]))
            r.emitted = safe
