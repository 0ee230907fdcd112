"""Load a base model with or without a checkpoint (tunewise.models.checkpoint says what to load) and generate chat
replies, whole or streamed piece by piece."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Iterator

from tunewise.args import Sampling
from tunewise.models.checkpoint import Checkpoint, resolve


@dataclass
class Reply:
    text: str
    finish_reason: str  # "stop" (end-of-turn token) or "length" (max_new_tokens reached)
    prompt_tokens: int
    completion_tokens: int


class Engine:
    def __init__(self, checkpoint: Checkpoint, dtype: str = "auto", attn_implementation: str | None = None):
        from tunewise.models.load import check_model_dir, end_of_turn_ids, load_model

        check_model_dir(checkpoint.base)
        self.checkpoint = checkpoint
        self.tokenizer = checkpoint.load_tokenizer()
        model = load_model(checkpoint.base, dtype, attn_implementation)
        if checkpoint.adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, checkpoint.adapter)
        self.model = model.eval()
        self.stop_ids = end_of_turn_ids(self.tokenizer)

    @classmethod
    def load(cls, model: str | None = None, adapters: list[str] = (), system: str | None = None,
             template: str | None = None, **kwargs) -> "Engine":
        return cls(resolve(model, list(adapters), system, template), **kwargs)

    # ---------------------------------------------------------------------------------------------------------
    def prompt_ids(self, messages: list[dict]) -> list[int]:
        from tunewise.data.template import prompt_ids

        return prompt_ids(self.tokenizer, messages, self.checkpoint.system)

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
