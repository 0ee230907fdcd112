"""Load a base model with or without a checkpoint and generate chat replies (whole, or streamed piece by piece).

`--adapters CKPT` is either a LoRA checkpoint (peft: adapter_config.json), applied on the base model named in the
run's args.json, or a full checkpoint (config.json + weights), loaded as the model itself. The run's system
prompt is used unless one is given.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from tunewise.errors import UserError


@dataclass
class Reply:
    text: str
    finish_reason: str  # "stop" (end-of-turn token) or "length" (max_new_tokens reached)
    prompt_tokens: int
    completion_tokens: int


@dataclass
class Sampling:
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 50
    repetition_penalty: float = 1.0
    max_new_tokens: int = 512
    seed: int | None = None


@dataclass
class ModelSpec:
    """What to load: the base model directory (or hub id), an optional LoRA checkpoint, and the run's system."""

    base: str
    adapter: str | None
    system: str | None
    label: str


def resolve_spec(model: str | None, adapters: list[str], system: str | None = None) -> ModelSpec:
    from tunewise.models.load import DEFAULT_MODEL, resolve_model
    from tunewise.train.rundir import find_run_dir, read_run_args

    if len(adapters) > 1:
        raise UserError("--adapters: give one checkpoint (several adapters at once are served by `tunewise serve`).")
    if not adapters:
        name = model or DEFAULT_MODEL
        return ModelSpec(resolve_model(name), None, system, name)
    ckpt = Path(adapters[0]).expanduser()
    if not ckpt.is_dir():
        raise UserError(f"--adapters {ckpt}: no such checkpoint directory.")
    is_lora = (ckpt / "adapter_config.json").is_file()
    if not is_lora and not (ckpt / "config.json").is_file():
        raise UserError(f"--adapters {ckpt}: neither a LoRA checkpoint (adapter_config.json) nor a model (config.json).")
    run_args = {}
    if model is None or system is None:
        try:
            run_args = read_run_args(find_run_dir(str(ckpt)))
        except UserError:
            if is_lora and model is None:
                raise
    if system is None:
        system = run_args.get("system")
    if not is_lora:
        return ModelSpec(str(ckpt), None, system, str(ckpt))
    return ModelSpec(resolve_model(model or run_args["model"]), str(ckpt), system, str(ckpt))


class Engine:
    def __init__(self, spec: ModelSpec, dtype: str = "auto", attn_implementation: str | None = None):
        from tunewise.models.load import end_of_turn_ids, load_model, load_tokenizer

        self.spec = spec
        tok_dir = spec.adapter if spec.adapter and (Path(spec.adapter) / "tokenizer_config.json").is_file() else spec.base
        self.tokenizer = load_tokenizer(tok_dir)
        model = load_model(spec.base, dtype, attn_implementation)
        if spec.adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, spec.adapter)
        self.model = model.eval()
        self.stop_ids = end_of_turn_ids(self.tokenizer)

    @classmethod
    def load(cls, model: str | None = None, adapters: list[str] = (), system: str | None = None, **kwargs) -> "Engine":
        return cls(resolve_spec(model, list(adapters), system), **kwargs)

    # ---------------------------------------------------------------------------------------------------------
    def prompt_ids(self, messages: list[dict]) -> list[int]:
        from tunewise.data.encode import with_system

        text = self.tokenizer.apply_chat_template(with_system(messages, self.spec.system), tokenize=False,
                                                  add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _generate_kwargs(self, ids: list[int], sampling: Sampling) -> dict:
        import torch
        from transformers import GenerationConfig

        sample = sampling.temperature > 0
        config = GenerationConfig(
            do_sample=sample, max_new_tokens=sampling.max_new_tokens, eos_token_id=self.stop_ids,
            pad_token_id=self.tokenizer.pad_token_id, repetition_penalty=sampling.repetition_penalty,
            **({"temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": sampling.top_k} if sample else {}),
        )
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        input_ids = torch.tensor([ids])
        return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "generation_config": config}

    def _finish(self, ids: list[int], new: list[int]) -> Reply:
        stopped = bool(new) and new[-1] in self.stop_ids
        text_ids = new[:-1] if stopped else new
        text = self.tokenizer.decode(text_ids, skip_special_tokens=True)
        return Reply(text, "stop" if stopped else "length", len(ids), len(new))

    def chat(self, messages: list[dict], sampling: Sampling | None = None) -> Reply:
        import torch

        sampling = sampling or Sampling()
        ids = self.prompt_ids(messages)
        with torch.no_grad():
            out = self.model.generate(**self._generate_kwargs(ids, sampling))
        return self._finish(ids, out[0, len(ids):].tolist())

    def stream(self, messages: list[dict], sampling: Sampling | None = None) -> Iterator[str | Reply]:
        """Yields text pieces as they are generated, then the final Reply."""
        import torch
        from transformers import TextIteratorStreamer

        sampling = sampling or Sampling()
        ids = self.prompt_ids(messages)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        result = {}

        def run():
            try:
                with torch.no_grad():
                    result["out"] = self.model.generate(**self._generate_kwargs(ids, sampling), streamer=streamer)
            except BaseException as e:  # surfaced in the caller's thread below
                result["error"] = e
                streamer.end()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        for piece in streamer:
            if piece:
                yield piece
        thread.join()
        if "error" in result:
            raise result["error"]
        yield self._finish(ids, result["out"][0, len(ids):].tolist())
