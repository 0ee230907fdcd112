"""One way to generate a chat reply, for infer, evaluate and serve: the prompt rendered by the chat template (with
the system prompt), sampling as the --temperature/--top_p/--top_k/--repetition_penalty/--seed flags say, the stop
at an end-of-turn token, and the finish reason ("stop": an end-of-turn token or a stop string; "length":
max_new_tokens reached) with the token counts (`Reply`).

`Generator` answers one conversation, whole (`chat`) or streamed piece by piece (`stream`), and many at once,
greedily and batched with left padding (`replies`: evaluate and the retention watch). These go through transformers'
`generate`. The serving scheduler (serve/batching.py) keeps its own step loop, in which each row of one forward
pass has its own sampling parameters; it samples with models/sampling.py and detokenizes in serve/generation.py,
and ends its rows with the same `Reply`.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Iterator

from tunewise.args import Sampling


@dataclass
class Reply:
    text: str
    finish_reason: str  # "stop" (end-of-turn token or stop string) or "length" (max_new_tokens reached)
    prompt_tokens: int
    completion_tokens: int  # generated tokens, the end-of-turn token included


def reply_of(tokenizer, prompt_tokens: int, new: list[int], stop_ids) -> Reply:
    """The reply in the generated ids `new`: cut at the first end-of-turn token ("stop"), else all of them
    ("length"); what follows that token (padding in a batch) is no part of it."""
    end = next((i for i, t in enumerate(new) if t in stop_ids), None)
    text = tokenizer.decode(new if end is None else new[:end], skip_special_tokens=True)
    return Reply(text, "length" if end is None else "stop", prompt_tokens, len(new) if end is None else end + 1)


def generation_config(sampling: Sampling, stop_ids: list[int], pad_token_id: int | None):
    """transformers' GenerationConfig of the sampling flags: greedy at temperature 0, else temperature, top-p and
    top-k sampling; the repetition penalty either way; generation ends at any of `stop_ids`."""
    from transformers import GenerationConfig

    sample = sampling.temperature > 0
    return GenerationConfig(
        do_sample=sample, max_new_tokens=sampling.max_new_tokens, eos_token_id=stop_ids,
        pad_token_id=pad_token_id, repetition_penalty=sampling.repetition_penalty,
        **({"temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": sampling.top_k} if sample else {}),
    )


class Generator:
    """A loaded model and its tokenizer, generating replies with `system` as the default system prompt."""

    def __init__(self, model, tokenizer, system: str | None = None):
        from tunewise.models.load import end_of_turn_ids

        self.model = model
        self.tokenizer = tokenizer
        self.system = system
        self.stop_ids = end_of_turn_ids(tokenizer)

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        from tunewise.data.template import prompt_ids

        return prompt_ids(self.tokenizer, messages, self.system)

    def _generate_kwargs(self, ids: list[int], sampling: Sampling) -> dict:
        import torch

        config = generation_config(sampling, self.stop_ids, self.tokenizer.pad_token_id)
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        input_ids = torch.tensor([ids])
        return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "generation_config": config}

    def chat(self, messages: list[dict], sampling: Sampling | None = None) -> Reply:
        import torch

        sampling = sampling or Sampling()
        ids = self.prompt_ids(messages)
        with torch.no_grad():
            out = self.model.generate(**self._generate_kwargs(ids, sampling))
        return reply_of(self.tokenizer, len(ids), out[0, len(ids):].tolist(), self.stop_ids)

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
        yield reply_of(self.tokenizer, len(ids), result["out"][0, len(ids):].tolist(), self.stop_ids)

    def replies(self, conversations: list[list[dict]], max_new_tokens: int = 64, batch_size: int = 50) -> list[Reply]:
        """Greedy replies to each conversation (left padding, batches of `batch_size`), stopping at end-of-turn."""
        import torch

        from tunewise.data.template import render

        tokenizer = self.tokenizer
        side = tokenizer.padding_side
        tokenizer.padding_side = "left"
        results: list[Reply] = []
        try:
            for start in range(0, len(conversations), batch_size):
                chunk = conversations[start:start + batch_size]
                prompts = [render(tokenizer, m, self.system) for m in chunk]
                enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
                with torch.no_grad():
                    out = self.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                              eos_token_id=self.stop_ids, pad_token_id=tokenizer.pad_token_id)
                width = enc["input_ids"].shape[1]
                for row, mask in zip(out[:, width:].tolist(), enc["attention_mask"].tolist()):
                    results.append(reply_of(tokenizer, sum(mask), row, self.stop_ids))
        finally:
            tokenizer.padding_side = side
        return results


def greedy_generations(model, tokenizer, conversations: list[list[dict]], max_new_tokens: int = 64,
                       system: str | None = None, batch_size: int = 50) -> list[Reply]:
    """Greedy replies to each conversation, batched, with how each ended: a reply that runs to max_new_tokens
    without an end-of-turn token is a repetition symptom."""
    return Generator(model, tokenizer, system).replies(conversations, max_new_tokens, batch_size)


def greedy_replies(model, tokenizer, conversations: list[list[dict]], max_new_tokens: int = 64,
                   system: str | None = None, batch_size: int = 50) -> list[str]:
    """The texts of `greedy_generations`."""
    return [g.text for g in greedy_generations(model, tokenizer, conversations, max_new_tokens, system, batch_size)]
