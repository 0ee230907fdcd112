"""The continuous-batching scheduler: one model in memory, many requests, several LoRA adapters, one forward pass
per step.

Requests wait in a queue. One worker thread owns the model and repeats:

1. admit: the waiting requests (up to `max_batch_size` in all) are prefilled together, their prompts left-padded,
   into a fresh KV cache; that cache is left-padded to the running batch's length and concatenated onto it, so
   requests join a batch that is already decoding (continuous batching, as vLLM and TGI do, but with a padded
   DynamicCache instead of paged memory);
2. decode: one forward pass computes the next token of every running request (a 2-D attention mask hides the
   padding; position ids are per request);
3. sample each request's token with its own parameters (greedy, or temperature / top-k / top-p with the request's
   seeded generator, repetition penalty), detokenize incrementally, check end-of-turn tokens, stop strings and
   `max_new_tokens`, and send the new text to that request's callback, with the tokens' logprobs when asked
   (serve/generation.py and serve/logprobs.py do these per-row steps);
4. drop finished (or cancelled) requests from the cache and trim padding columns nobody needs any more.

A request whose own step raises (its seed, its sampling, its text) fails alone and is dropped in step 4; only a
failing forward pass fails the whole batch, and the worker goes on with the next one.

Requests for different LoRA adapters share a batch through peft's mixed-adapter inference: the forward pass gets
`adapter_names=[...]`, one entry per row ("__base__" for the plain base model), and each LoRA layer applies each
adapter to its own rows only (peft `LoraLayer._mixed_batch_forward`).

`batching="dynamic"` admits new requests only when the batch is empty (a batch runs until its last request
finishes); `batching="none"` serves one request at a time. Both exist to measure continuous batching against
(benchmarks/serve_batching.py); models whose cache is not a plain full-attention DynamicCache (sliding-window
layers) fall back to dynamic batching, whose batches never merge caches.

serve/engine.py loads the model and its adapters and feeds this scheduler.
"""
from __future__ import annotations

import collections
import itertools
import random
import threading
import traceback

from tunewise.serve.generation import Detokenizer, Failed, Request, accept, isolated, sample
from tunewise.serve.logprobs import TokenBytes

BASE = "__base__"  # peft's name for "no adapter" in adapter_names
BATCHING = ("continuous", "dynamic", "none")


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
        self.vocab = TokenBytes(tokenizer)  # token names and bytes for logprobs (the worker's tokenizer)
        self.lock = threading.RLock()  # held by the worker while it uses the model; take it to change the model
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
        return self.submit_all([request])[0]

    def submit_all(self, requests: list[Request]) -> list[Request]:
        """Queued together (the n choices of one HTTP request), so that they are admitted in one prefill when
        the batch has room for them all."""
        with self._cv:
            if self._closed:
                raise RuntimeError("the scheduler is closed")
            for request in requests:
                request.id = next(self._ids)
                self._queue.append(request)
            self._cv.notify()
        return requests

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
                        r.send(Failed(f"generation failed: {type(e).__name__}: {e}"))
                self._reset()
        for r in pending:
            r.send(Failed("the server is shutting down"))

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
        for r in new:
            with isolated(r):  # a seed the generator refuses fails its request, before the prefill
                r.generator = torch.Generator().manual_seed(
                    r.sampling.seed if r.sampling.seed is not None else random.SystemRandom().randrange(2**63))
        new = [r for r in new if not r.finished]
        if not new:
            return
        self.stats["admissions"] += 1
        lengths = [len(r.prompt_ids) for r in new]
        width = max(lengths)
        ids = torch.full((len(new), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(new), width), dtype=torch.long)
        for i, r in enumerate(new):
            ids[i, width - lengths[i]:] = torch.tensor(r.prompt_ids, dtype=torch.long)
            mask[i, width - lengths[i]:] = 1
            r.detok = Detokenizer(self.tokenizer)
            if r.logprobs is not None:
                r.vocab = self.vocab
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
        tokens = sample(logits, new)
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
        tokens = sample(logits, self.rows)
        self.last = tokens
        self._accept(self.rows, tokens.tolist())

    def _accept(self, rows: list[Request], tokens: list[int]) -> None:
        accept(rows, tokens, self.stop_ids, self.max_length)  # the tokenizer is the worker's own (engine.py)

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
