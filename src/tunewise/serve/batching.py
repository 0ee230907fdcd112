"""Continuous batching over one model in memory: many requests, several LoRA adapters, one forward pass per step.

Requests wait in a queue. One worker thread owns the model and repeats:

1. admit: the waiting requests (up to `max_batch_size` in all) are prefilled together, their prompts left-padded,
   into a fresh KV cache; that cache is left-padded to the running batch's length and concatenated onto it, so
   requests join a batch that is already decoding (continuous batching, as vLLM and TGI do, but with a padded
   DynamicCache instead of paged memory);
2. decode: one forward pass computes the next token of every running request (a 2-D attention mask hides the
   padding; position ids are per request);
3. sample each request's token with its own parameters (greedy, or temperature / top-k / top-p with the request's
   seeded generator, repetition penalty), detokenize incrementally, check end-of-turn tokens, stop strings and
   `max_new_tokens`, and send the new text to that request's callback;
4. drop finished (or cancelled) requests from the cache and trim padding columns nobody needs any more.

Requests for different LoRA adapters share a batch through peft's mixed-adapter inference: the forward pass gets
`adapter_names=[...]`, one entry per row ("__base__" for the plain base model), and each LoRA layer applies each
adapter to its own rows only (peft `LoraLayer._mixed_batch_forward`).

`batching="dynamic"` admits new requests only when the batch is empty (a batch runs until its last request
finishes); `batching="none"` serves one request at a time. Both exist to measure continuous batching against
(benchmarks/serve_batching.py); models whose cache is not a plain full-attention DynamicCache (sliding-window
layers) fall back to dynamic batching, whose batches never merge caches.
"""
from __future__ import annotations

import collections
import itertools
import random
import re
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable, Iterator

from tunewise.args import Sampling
from tunewise.infer.engine import Reply

BASE = "__base__"  # peft's name for "no adapter" in adapter_names
BATCHING = ("continuous", "dynamic", "none")


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


class BatchScheduler:
    """The queue and the worker thread. `submit` from any thread; events arrive through each request's `emit`."""

    def __init__(self, model, tokenizer, stop_ids: list[int], max_batch_size: int = 32,
                 batching: str = "continuous", max_length: int | None = None):
        import torch

        if batching not in BATCHING:
            raise ValueError(f"batching must be one of {BATCHING}, got {batching!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.stop_ids = set(stop_ids)
        self.max_batch_size = 1 if batching == "none" else max(1, max_batch_size)
        self.batching = batching
        config = getattr(model, "config", None)
        self.max_length = max_length or getattr(config, "max_position_embeddings", None) or 2048
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.lock = threading.RLock()  # held by the worker while it uses the model; take it to change the model
        self.tokenizer_lock = threading.Lock()
        self._cv = threading.Condition()
        self._queue: collections.deque[Request] = collections.deque()
        self._ids = itertools.count(1)
        self._closed = False
        self._torch = torch
        # batch state
        self.rows: list[Request] = []
        self.cache = None
        self.mask = None  # [B, T] 1 for real tokens
        self.positions = None  # [B] position id of the next token
        self.last = None  # [B] last sampled token
        self.stats = collections.Counter()
        self._mode = None  # which adapter the model currently applies (see _route)
        self._thread = threading.Thread(target=self._loop, name="tunewise-batching", daemon=True)
        self._thread.start()

    # -- public ---------------------------------------------------------------------------------------------------
    def submit(self, request: Request) -> Request:
        request.id = next(self._ids)
        with self._cv:
            if self._closed:
                raise RuntimeError("the scheduler is closed")
            self._queue.append(request)
            self._cv.notify()
        return request

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join(timeout=30)

    @property
    def running(self) -> int:
        return len(self.rows)

    @property
    def waiting(self) -> int:
        return len(self._queue)

    # -- worker ---------------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        torch = self._torch
        while True:
            with self._cv:
                while not self._closed and not self._queue and not self.rows:
                    self._cv.wait()
                if self._closed:
                    pending = list(self._queue) + self.rows
                    self._queue.clear()
                    break
                admit = []
                room = self.max_batch_size - len(self.rows)
                if self.batching == "continuous" or not self.rows:
                    while self._queue and len(admit) < room:
                        admit.append(self._queue.popleft())
            try:
                with self.lock, torch.inference_mode():
                    self._drop_finished()
                    admit = [r for r in admit if not self._refuse_cancelled(r)]
                    if admit:
                        self._admit(admit)
                        self._drop_finished()
                    if self.rows:
                        self._decode_step()
                        self._drop_finished()
            except Exception as e:  # a failed forward pass fails its batch; the server keeps serving
                traceback.print_exc()
                for r in self.rows + admit:
                    if not r.finished:
                        r.finished = True
                        r.emit(Failed(f"generation failed: {type(e).__name__}: {e}"))
                self._reset()
        for r in pending:
            r.emit(Failed("the server is shutting down"))

    def _refuse_cancelled(self, r: Request) -> bool:
        if r.cancelled:
            r.finished = True
        return r.cancelled

    def _reset(self) -> None:
        self.rows, self.cache, self.mask, self.positions, self.last = [], None, None, None, None

    def _route(self, adapters: list[str | None]) -> dict:
        """Make the model apply the right adapter to each row; returns the extra forward kwargs.

        A batch of one adapter (or of the base alone) runs peft's plain path with that adapter active (or the
        adapter layers disabled); only a mixed batch pays for `adapter_names` (peft registers hooks per call)."""
        from peft import PeftModel

        if not isinstance(self.model, PeftModel):
            return {}
        names = {a or BASE for a in adapters}
        mode = next(iter(names)) if len(names) == 1 else "__mixed__"
        if mode != self._mode:
            if mode == BASE:
                self.model.base_model.disable_adapter_layers()
            else:
                self.model.base_model.enable_adapter_layers()
                if mode != "__mixed__":
                    self.model.base_model.set_adapter(mode, inference_mode=True)
            self._mode = mode
        return {"adapter_names": [a or BASE for a in adapters]} if mode == "__mixed__" else {}

    def _forward(self, input_ids, mask, positions, cache, adapters: list[str | None]):
        kwargs = self._route(adapters)
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                         use_cache=True, logits_to_keep=1, **kwargs)
        return out.logits[:, -1, :].float()

    def _new_cache(self):
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config)

    def _mergeable(self, cache) -> bool:
        from transformers.cache_utils import DynamicLayer

        return all(type(layer) is DynamicLayer for layer in cache.layers)

    def _admit(self, new: list[Request]) -> None:
        torch = self._torch
        self.stats["admissions"] += 1
        lengths = [len(r.prompt_ids) for r in new]
        width = max(lengths)
        ids = torch.full((len(new), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(new), width), dtype=torch.long)
        for i, r in enumerate(new):
            ids[i, width - lengths[i]:] = torch.tensor(r.prompt_ids, dtype=torch.long)
            mask[i, width - lengths[i]:] = 1
            r.detok = Detokenizer(self.tokenizer)
            r.generator = torch.Generator().manual_seed(
                r.sampling.seed if r.sampling.seed is not None else random.SystemRandom().randrange(2**63))
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = self._new_cache()
        logits = self._forward(ids, mask, positions, cache, [r.adapter for r in new])
        new_positions = torch.tensor(lengths, dtype=torch.long)
        if self.rows:
            if self.batching != "continuous" or not self._mergeable(cache):
                raise RuntimeError("internal: merging caches needs continuous batching over a DynamicCache")
            self._merge(cache, mask, new_positions, new)
        else:
            self.cache, self.mask, self.positions, self.rows = cache, mask, new_positions, list(new)
            self.last = torch.zeros(len(new), dtype=torch.long)
            if self.batching == "continuous" and not self._mergeable(cache):
                self.batching = "dynamic"
        tokens = self._sample(logits, new)
        self.last[-len(new):] = tokens
        self._accept(new, tokens.tolist())

    def _merge(self, cache, mask, positions, new: list[Request]) -> None:
        torch = self._torch
        old_t, new_t = self.mask.shape[1], mask.shape[1]
        width = max(old_t, new_t)

        def left_pad(t, n):  # pad dim -2 (keys/values) or -1 (mask) on the left with zeros
            if n == 0:
                return t
            if t.dim() == 2:
                return torch.cat([t.new_zeros(t.shape[0], n), t], dim=1)
            shape = list(t.shape)
            shape[-2] = n
            return torch.cat([t.new_zeros(shape), t], dim=-2)

        for old_layer, new_layer in zip(self.cache.layers, cache.layers):
            old_layer.keys = torch.cat([left_pad(old_layer.keys, width - old_t), left_pad(new_layer.keys, width - new_t)])
            old_layer.values = torch.cat([left_pad(old_layer.values, width - old_t),
                                          left_pad(new_layer.values, width - new_t)])
        self.mask = torch.cat([left_pad(self.mask, width - old_t), left_pad(mask, width - new_t)])
        self.positions = torch.cat([self.positions, positions])
        self.last = torch.cat([self.last, torch.zeros(len(new), dtype=torch.long)])
        self.rows = self.rows + list(new)

    def _decode_step(self) -> None:
        torch = self._torch
        self.stats["steps"] += 1
        self.stats["row_steps"] += len(self.rows)
        self.stats["max_batch"] = max(self.stats["max_batch"], len(self.rows))
        if len({r.adapter for r in self.rows}) > 1:
            self.stats["mixed_adapter_steps"] += 1
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(self.rows), 1)], dim=1)
        logits = self._forward(self.last[:, None], self.mask, self.positions[:, None], self.cache,
                               [r.adapter for r in self.rows])
        self.positions = self.positions + 1
        tokens = self._sample(logits, self.rows)
        self.last = tokens
        self._accept(self.rows, tokens.tolist())

    def _sample(self, logits, rows: list[Request]):
        torch = self._torch
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

    def _accept(self, rows: list[Request], tokens: list[int]) -> None:
        with self.tokenizer_lock:
            for r, token in zip(rows, tokens):
                if r.finished:
                    continue
                r.generated.append(token)
                reason = None
                if token in self.stop_ids and not r.ignore_eos:
                    reason = "stop"
                else:
                    r.detok.add(token)
                    if len(r.generated) >= r.sampling.max_new_tokens or \
                            len(r.prompt_ids) + len(r.generated) >= self.max_length:
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

    def _drop_finished(self) -> None:
        torch = self._torch
        if not self.rows:
            return
        for r in self.rows:
            if r.cancelled and not r.finished:
                r.finished = True
        keep = [i for i, r in enumerate(self.rows) if not r.finished]
        if len(keep) == len(self.rows):
            return
        if not keep:
            self._reset()
            return
        index = torch.tensor(keep, dtype=torch.long)
        mask = self.mask[index]
        start = int((mask.sum(0) > 0).nonzero()[0, 0])  # columns before this are padding in every kept row
        for layer in self.cache.layers:
            layer.keys = layer.keys[index, :, start:]
            layer.values = layer.values[index, :, start:]
        self.mask = mask[:, start:]
        self.positions = self.positions[index]
        self.last = self.last[index]
        self.rows = [self.rows[i] for i in keep]


# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Served:
    """One model name the server answers to: the base (adapter None) or a LoRA adapter."""

    name: str
    adapter: str | None  # peft adapter name inside the model, None for the base
    path: str  # what was loaded: the base directory or the checkpoint directory
    system: str | None
    created: int = field(default_factory=lambda: int(time.time()))


class BatchEngine:
    """One base model in memory, any number of LoRA adapters on it, and the batching scheduler.

    `stream`/`chat` are blocking conveniences (web UI, benchmarks); the HTTP server submits `Request`s itself.
    """

    def __init__(self, base: str, base_name: str, system: str | None = None, dtype: str = "auto",
                 attn_implementation: str | None = None, max_batch_size: int = 32, batching: str = "continuous"):
        from tunewise.models.load import end_of_turn_ids, load_model, load_tokenizer

        self.tokenizer = load_tokenizer(base)
        self.model = load_model(base, dtype, attn_implementation).eval()
        self.base_path = base
        self.models: dict[str, Served] = {base_name: Served(base_name, None, base, system)}
        self.base_name = base_name
        self.stop_ids = end_of_turn_ids(self.tokenizer)
        self.scheduler = BatchScheduler(self.model, self.tokenizer, self.stop_ids, max_batch_size, batching)

    def add_adapter(self, name: str, checkpoint: str, system: str | None = None) -> Served:
        """Load a LoRA checkpoint under `name`; requests then pick it with model=name. Safe while serving."""
        from peft import PeftModel

        from tunewise.errors import UserError

        if name in self.models:
            raise UserError(f"--adapters {name}={checkpoint}: the name {name!r} is already served.")
        # peft keeps adapters in ModuleDicts, whose keys may not contain dots: the served name can be anything
        key = re.sub(r"\W", "_", name)
        while key in {s.adapter for s in self.models.values()}:
            key += "_"
        with self.scheduler.lock:
            try:
                if isinstance(self.model, PeftModel):
                    self.model.load_adapter(checkpoint, adapter_name=key)
                else:
                    self.model = PeftModel.from_pretrained(self.model, checkpoint, adapter_name=key)
            except (RuntimeError, ValueError, KeyError) as e:
                raise UserError(f"--adapters {name}={checkpoint}: cannot load it on {self.base_path} "
                                f"({type(e).__name__}: {str(e).splitlines()[0][:300]}).") from e
            self.model.eval()
            self.scheduler.model = self.model
            self.scheduler._mode = None
        served = Served(name, key, checkpoint, system)
        self.models[name] = served
        return served

    def close(self) -> None:
        self.scheduler.close()

    # -- prompts --------------------------------------------------------------------------------------------------
    def prompt_ids(self, name: str, messages: list[dict]) -> list[int]:
        from tunewise.data.template import prompt_ids

        with self.scheduler.tokenizer_lock:
            return prompt_ids(self.tokenizer, messages, self.models[name].system)

    def request(self, name: str, messages: list[dict], sampling: Sampling, stop: list[str] | None,
                emit: Callable[[Event], None]) -> Request:
        ids = self.prompt_ids(name, messages)
        if len(ids) >= self.scheduler.max_length:
            raise ValueError(f"the prompt has {len(ids)} tokens; this model's context is {self.scheduler.max_length}")
        return self.scheduler.submit(Request(ids, emit, sampling, list(stop or []), self.models[name].adapter))

    # -- blocking conveniences --------------------------------------------------------------------------------------
    def stream(self, name: str, messages: list[dict], sampling: Sampling | None = None,
               stop: list[str] | None = None) -> Iterator[str | Reply]:
        """Text pieces as they are generated, then the Reply (like Engine.stream), batched with everything else."""
        import queue

        events: queue.Queue = queue.Queue()
        req = self.request(name, messages, sampling or Sampling(), stop, events.put)
        try:
            while True:
                event = events.get()
                if isinstance(event, Delta):
                    yield event.text
                elif isinstance(event, Done):
                    yield event.reply
                    return
                else:
                    raise RuntimeError(event.message)
        finally:
            req.cancel()

    def chat(self, name: str, messages: list[dict], sampling: Sampling | None = None,
             stop: list[str] | None = None) -> Reply:
        for piece in self.stream(name, messages, sampling, stop):
            if isinstance(piece, Reply):
                return piece
        raise RuntimeError("no reply")
