"""The served models: one base model in memory and LoRA adapters loaded on it by name (`BatchEngine`, `Served`),
generating through the batching scheduler (serve/batching.py), and how the flags name them (`parse_adapters`,
`resolve_base`, `build_engine`). `tunewise serve` (serve/app.py) and the web UI use it.
"""
from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from tunewise.args import Sampling
from tunewise.errors import UserError, raise_problems
from tunewise.models.generate import Reply
from tunewise.serve.args import ServeArgs
from tunewise.serve.batching import BatchScheduler
from tunewise.serve.generation import Delta, Done, Event, Request


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
                 attn_implementation: str | None = None, max_batch_size: int = 32, batching: str = "continuous",
                 template: str | None = None, tokenizer_dir: str | None = None):
        """`template` names a chat template (tunewise.data.templates); `tokenizer_dir` is where the tokenizer
        comes from: the base, or an adapter that saved the template a base without one was trained with."""
        from tunewise.models.load import end_of_turn_ids, load_model, load_tokenizer

        self.tokenizer = load_tokenizer(tokenizer_dir or base, template)
        # prompts get their own copy (one HF tokenizer is not safe in two threads at once): tokenizing a long prompt
        # takes seconds (2 MiB: 3-6 s on 2 cores) and must not hold the lock the worker detokenizes under every step
        self.prompt_tokenizer = load_tokenizer(tokenizer_dir or base, template)
        self._prompt_lock = threading.Lock()
        self.model = load_model(base, dtype, attn_implementation).eval()
        self.base_path = base
        self.models: dict[str, Served] = {base_name: Served(base_name, None, base, system)}
        self.base_name = base_name
        self.stop_ids = end_of_turn_ids(self.tokenizer)
        self.scheduler = BatchScheduler(self.model, self.tokenizer, self.stop_ids, max_batch_size, batching)

    def add_adapter(self, name: str, checkpoint: str, system: str | None = None) -> Served:
        """Load a LoRA checkpoint under `name`; requests then pick it with model=name. Safe while serving."""
        from tunewise.errors import brief
        from tunewise.models.checkpoint import attach_adapter

        if name in self.models:
            raise UserError(f"--adapters {name}={checkpoint}: the name {name!r} is already served.")
        from tunewise.data.templates import renders_alike
        from tunewise.models.load import saved_chat_template

        trained_with = saved_chat_template(checkpoint)
        if trained_with is not None and not renders_alike(self.tokenizer, trained_with):
            raise UserError(f"--adapters {name}={checkpoint}: it was trained with another chat template than this "
                            "server renders prompts with, and would answer prompts it never saw; serve it from a "
                            "server of its own (or pass the --template it was trained with).")
        # peft keeps adapters in ModuleDicts, whose keys may not contain dots: the served name can be anything
        key = re.sub(r"\W", "_", name)
        while key in {s.adapter for s in self.models.values()}:
            key += "_"
        with self.scheduler.lock:
            try:
                self.model = attach_adapter(self.model, checkpoint, key)
            except (RuntimeError, ValueError, KeyError) as e:
                raise UserError(f"--adapters {name}={checkpoint}: cannot load it on {self.base_path} ({brief(e)}).") from e
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

        with self._prompt_lock:
            return prompt_ids(self.prompt_tokenizer, messages, self.models[name].system)

    def text_ids(self, text: str) -> list[int]:
        """A raw-text prompt's ids, no chat template (the legacy completions API), as vLLM tokenizes it."""
        with self._prompt_lock:
            return self.prompt_tokenizer(text, add_special_tokens=True)["input_ids"]

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


# -- what is served: base + adapters, from the flags ---------------------------------------------------------------
@dataclass
class AdapterSpec:
    name: str
    path: str
    base: str | None  # the base model its run was trained on (args.json), when known
    system: str | None
    rank: int


def parse_adapters(items: list[str]) -> list[AdapterSpec]:
    """NAME=CHECKPOINT items -> specs; each must be a LoRA checkpoint. All problems are reported at once."""
    from tunewise.models.adapter_config import is_lora, lora_rank
    from tunewise.models.checkpoint import run_args_of

    specs, problems, names = [], [], set()
    for item in items:
        name, eq, path = item.partition("=")
        if not eq:
            name, path = Path(item.rstrip("/")).name, item
        if not name or not path:
            problems.append(f"--adapters {item}: expected NAME=CHECKPOINT.")
            continue
        ckpt = Path(path).expanduser()
        if name in names:
            problems.append(f"--adapters {item}: the name {name!r} is given twice.")
        names.add(name)
        if not ckpt.is_dir():
            problems.append(f"--adapters {item}: no such checkpoint directory.")
            continue
        if not is_lora(ckpt):
            kind = "a full model; serve it with --model" if (ckpt / "config.json").is_file() else "not a checkpoint"
            problems.append(f"--adapters {item}: no adapter_config.json, so not a LoRA checkpoint ({kind}).")
            continue
        run_args = run_args_of(str(ckpt))
        specs.append(AdapterSpec(name, str(ckpt.resolve()), run_args.get("model"), run_args.get("system"),
                                 lora_rank(ckpt)))
    raise_problems(problems)
    return specs


def resolve_base(model: str | None, adapters: list[AdapterSpec]) -> tuple[str, str]:
    """(base directory or hub id, its served name). Adapters trained on another base are an error."""
    from tunewise.models.load import DEFAULT_MODEL, resolve_model

    if model is None:
        bases = [a.base for a in adapters if a.base]
        model = bases[0] if bases else DEFAULT_MODEL
    base = resolve_model(model)
    for a in adapters:
        if a.base and _same_model(resolve_model(a.base), base) is False:
            raise UserError(f"--adapters {a.name}={a.path}: trained on {a.base}, but the base model served is {model}. "
                            f"Pass --model {a.base}, or serve it from another server.")
    return base, model


def _same_model(a: str, b: str) -> bool | None:
    pa, pb = Path(a), Path(b)
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve()
    if pa.exists() != pb.exists():
        return None  # a local copy of a hub model cannot be told apart: allow
    return a == b


def build_engine(args: ServeArgs):
    from tunewise.models.load import saved_chat_template

    specs = parse_adapters(args.adapters)
    base, name = resolve_base(args.model, specs)
    name = args.served_model_name or name
    if name in {s.name for s in specs}:
        raise UserError(f"--adapters: the name {name!r} is the base model's; choose another.")
    tokenizer_dir = base
    if args.template is None and Path(base).is_dir() and saved_chat_template(base) is None:
        # a base model without a template: its adapters saved the one they were trained with
        tokenizer_dir = next((s.path for s in specs if saved_chat_template(s.path) is not None), base)
    engine = BatchEngine(base, name, args.system, args.torch_dtype, args.attn_impl, args.max_batch_size, args.batching,
                         args.template, tokenizer_dir)
    for spec in specs:
        engine.add_adapter(spec.name, spec.path, spec.system)
    return engine


def set_threads(n: int) -> int:
    """torch intra-op threads: n, or (n == 0) all cores but one. On a small CPU the tokenizer, the HTTP server and
    the batching loop need a core of their own; oversubscribed torch threads spin and slow every step down."""
    import os

    import torch

    if n <= 0:
        n = max(1, (os.cpu_count() or 2) - 1)
    torch.set_num_threads(n)
    return n
