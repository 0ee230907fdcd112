"""Batched greedy generation for scoring many prompts at once (left padding, stop at end-of-turn).

`greedy_generations` also says how each reply ended: a reply that runs to --max_new_tokens without an end-of-turn
token is a repetition symptom. `greedy_replies` returns the texts only.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Generation:
    text: str
    finish_reason: str  # "stop" (an end-of-turn token) or "length" (max_new_tokens reached)
    tokens: int  # generated tokens, the end-of-turn token included


def greedy_generations(model, tokenizer, conversations: list[list[dict]], max_new_tokens: int = 64,
                       system: str | None = None, batch_size: int = 50) -> list[Generation]:
    """Greedy replies to each conversation (left padding, batches of `batch_size`), stopping at end-of-turn."""
    import torch

    from tunewise.data.template import render
    from tunewise.models.load import end_of_turn_ids

    stop = end_of_turn_ids(tokenizer)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    results: list[Generation] = []
    try:
        for start in range(0, len(conversations), batch_size):
            chunk = conversations[start:start + batch_size]
            prompts = [render(tokenizer, m, system) for m in chunk]
            enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.no_grad():
                out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stop,
                                     pad_token_id=tokenizer.pad_token_id)
            for row in out[:, enc["input_ids"].shape[1]:].tolist():
                end = next((i for i, t in enumerate(row) if t in stop), None)
                new = row if end is None else row[:end]
                text = tokenizer.decode(new, skip_special_tokens=True)
                results.append(Generation(text, "length" if end is None else "stop",
                                          len(row) if end is None else end + 1))
    finally:
        tokenizer.padding_side = side
    return results


def greedy_replies(model, tokenizer, conversations: list[list[dict]], max_new_tokens: int = 64,
                   system: str | None = None, batch_size: int = 50) -> list[str]:
    """The texts of `greedy_generations`."""
    return [g.text for g in greedy_generations(model, tokenizer, conversations, max_new_tokens, system, batch_size)]
