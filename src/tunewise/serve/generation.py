"""One generation in a batch and what happens to its row at each step.

`Request` is what a client submits (prompt ids, adapter, sampling, stop strings) and the state the worker keeps
for it; `Delta`, `Done` and `Failed` are the events sent to its callback. Per step, `sample` picks each row's next
token with that request's own parameters (greedy, or temperature / top-k / top-p with its seeded generator,
repetition penalty: the pieces of models/sampling.py) and `accept` detokenizes it incrementally, checks
end-of-turn tokens, stop strings and `max_new_tokens`, and emits the new text, with the logprobs of its tokens when
the request wants them (serve/logprobs.py). The scheduler that batches the rows is serve/batching.py.

What one row does cannot fail the others: a row whose sampling or detokenizing raises gets a `Failed` event and
leaves the batch (`isolated`), and a callback that raises cancels its own request only (`Request.send`).
"""
from __future__ import annotations

import contextlib
import traceback
from dataclasses import dataclass, field
from typing import Callable

from tunewise.args import Sampling
from tunewise.models.generate import Reply
from tunewise.models.sampling import draw, nucleus, penalize, samples


@dataclass
class Delta:
    text: str
    logprobs: list | None = None  # TokenLogprob of the tokens whose text this piece completes (logprobs wanted)


@dataclass
class Done:
    reply: Reply
    logprobs: list | None = None  # TokenLogprob of every token of the reply (logprobs wanted)


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
    logprobs: int | None = None  # report each token's logprob and this many top alternatives; None: not at all
    id: int = 0
    cancelled: bool = False
    # state owned by the worker thread
    generated: list[int] = field(default_factory=list)
    emitted: int = 0
    checked: int = 0
    detok: Detokenizer | None = None
    generator: object = None
    finished: bool = False
    vocab: object = None  # logprobs.TokenBytes, when logprobs are wanted
    step_logprob: tuple | None = None  # this step's (logprob, top ids, top logprobs), from `sample`
    entries: list = field(default_factory=list)  # TokenLogprob per token of the reply so far
    released: int = 0  # entries sent in Deltas

    def cancel(self) -> None:
        self.cancelled = True

    def send(self, event: Event) -> None:
        """`emit` from the worker. A callback that raises (its event loop has closed) cancels this request only."""
        try:
            self.emit(event)
        except Exception:
            traceback.print_exc()
            self.cancelled = True


@contextlib.contextmanager
def isolated(r: Request):
    """One row's step: an exception fails this request alone (a Failed event, the traceback in the log); the
    scheduler drops it from the batch with the finished ones."""
    try:
        yield
    except Exception as e:
        traceback.print_exc()
        if not r.finished:
            r.finished = True
            r.send(Failed(f"generation failed: {type(e).__name__}: {e}"))


def sample(logits, rows: list[Request]):
    """The next token of each row ([B] long tensor) from its logits ([B, V] float, penalized in place)."""
    from tunewise.serve.logprobs import raw_logprobs, record

    want, raw = raw_logprobs(logits, rows)  # the model's own distribution, before the penalty below changes logits
    for i, r in enumerate(rows):
        if r.sampling.repetition_penalty and r.sampling.repetition_penalty != 1.0:
            with isolated(r):
                penalize(logits, i, r.prompt_ids + r.generated, r.sampling.repetition_penalty)
    tokens = logits.argmax(-1)
    sampled = [i for i, r in enumerate(rows) if not r.finished and _samples(r)]
    if sampled:
        _draw(logits, rows, sampled, tokens)
    if want:
        record(want, raw, rows, tokens)
    return tokens


def _draw(logits, rows: list[Request], sampled: list[int], tokens) -> None:
    try:
        groups = [(sampled, *nucleus(logits[sampled], [rows[i].sampling for i in sampled]))]
    except Exception:  # one row's parameters broke the batched filter: filter each row alone, so only it fails
        groups = []
        for i in sampled:
            with isolated(rows[i]):
                groups.append(([i], *nucleus(logits[[i]], [rows[i].sampling])))
    for index, probs, order in groups:
        for j, i in enumerate(index):
            with isolated(rows[i]):  # NaN logits in this row: multinomial raises
                tokens[i] = draw(probs[j], order[j], rows[i].generator)


def _samples(r: Request) -> bool:
    with isolated(r):  # a temperature that is not a number fails its request (None: greedy, dropped)
        return samples(r.sampling)


def accept(rows: list[Request], tokens: list[int], stop_ids: set[int], max_length: int) -> None:
    """Append each row's token, emit its new text, and finish the rows that are done (Done after the last Delta).

    Holds back the last characters that could still start a stop string. Worker thread only: the tokenizer is not
    safe in two threads at once."""
    for r, token in zip(rows, tokens):
        if not r.finished:
            with isolated(r):
                _accept(r, token, stop_ids, max_length)


def _accept(r: Request, token: int, stop_ids: set[int], max_length: int) -> None:
    from tunewise.serve.logprobs import entry

    r.generated.append(token)
    reason = None
    offset = len(r.detok.text)
    eos = token in stop_ids and not r.ignore_eos
    if eos:
        reason = "stop"
    else:
        r.detok.add(token)
        if len(r.generated) >= r.sampling.max_new_tokens or len(r.prompt_ids) + len(r.generated) >= max_length:
            reason = "length"
    if reason is not None:
        r.detok.flush()
    if r.logprobs is not None and not eos:  # the end-of-turn token is no part of the content: not listed
        r.entries.append(entry(r, token, offset))
    text = r.detok.text
    if r.stop:
        start = max(0, r.checked - max(len(s) for s in r.stop) + 1)
        hits = [p for p in (text.find(s, start) for s in r.stop) if p >= 0]
        r.checked = len(text)
        if hits:
            text, reason = text[:min(hits)], "stop"
            # tokens wholly inside the stop string are cut with it (one that straddles the cut stays)
            r.entries = [e for e in r.entries if e.offset < len(text)]
    if reason is not None:
        pieces = r.entries[r.released:] if r.logprobs is not None else None
        if len(text) > r.emitted or pieces:
            r.send(Delta(text[r.emitted:], pieces))
        r.finished = True
        r.send(Done(Reply(text, reason, len(r.prompt_ids), len(r.generated)),
                    r.entries if r.logprobs is not None else None))
        return
    safe = len(text) - (max(len(s) for s in r.stop) - 1 if r.stop else 0)
    if safe > r.emitted:
        r.send(Delta(text[r.emitted:safe], _release(r, safe) if r.logprobs is not None else None))
        r.emitted = safe


def _release(r: Request, safe: int) -> list:
    """The entries whose text now lies wholly in the emitted text, `safe` characters; one that starts there waits
    (a stop string found later may still cut it)."""
    ends = [e.offset for e in r.entries[r.released + 1:]] + [len(r.detok.text)]
    n = 0
    for e, end in zip(r.entries[r.released:], ends):
        if not (e.offset < safe and end <= safe):
            break
        n += 1
    ready = r.entries[r.released:r.released + n]
    r.released += n
    return ready
