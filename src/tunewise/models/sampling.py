"""Sampling one token per row from a batch's logits, each row with its own parameters (the serving scheduler's
step, serve/generation.py): the repetition penalty, greedy below MIN_TEMPERATURE, else temperature, top-k and top-p
(the nucleus). The same rules as transformers' generate applies for `tunewise infer` (models/generate.py): the
penalty divides a seen token's positive logit and multiplies a negative one; top-k keeps the k best tokens and top-p
the best ones whose probability mass before them is within p (the best one always)."""
from __future__ import annotations

from tunewise.args import Sampling

MIN_TEMPERATURE = 1e-5  # below it sampling is greedy: logits / 1e-40 overflow to inf and the softmax to NaN (vLLM's eps)


def penalize(logits, row: int, seen: list[int], penalty: float | None) -> None:
    """Apply the repetition penalty to row `row` of `logits` in place, for the token ids in `seen`."""
    import torch

    if penalty and penalty != 1.0:
        index = torch.tensor(sorted(set(seen)), dtype=torch.long)
        score = logits[row, index]
        logits[row, index] = torch.where(score < 0, score * penalty, score / penalty)


def samples(sampling: Sampling) -> bool:
    """Whether this sampling draws at random (else greedy); a temperature that is not a number raises."""
    return sampling.temperature >= MIN_TEMPERATURE


def nucleus(sub, samplings: list[Sampling]):
    """(probabilities over each row's tokens sorted best first, after temperature, top-k and top-p; that order)."""
    import torch

    temps = torch.tensor([s.temperature for s in samplings], dtype=sub.dtype)
    sub = sub / temps[:, None]
    sorted_logits, order = sub.sort(dim=-1, descending=True)
    vocab = sub.shape[-1]
    ks = torch.tensor([min(s.top_k, vocab) if (s.top_k or 0) > 0 else vocab for s in samplings])
    ranks = torch.arange(vocab)[None, :]
    sorted_logits = sorted_logits.masked_fill(ranks >= ks[:, None], float("-inf"))
    top_p = torch.tensor([s.top_p if s.top_p is not None else 1.0 for s in samplings], dtype=sub.dtype)
    probs = sorted_logits.softmax(-1)
    before = probs.cumsum(-1) - probs  # mass of the better tokens; the best one is always kept
    sorted_logits = sorted_logits.masked_fill(before > top_p[:, None], float("-inf"))
    return sorted_logits.softmax(-1), order


def draw(probs, order, generator) -> int:
    """One token id from a row of `nucleus`'s probabilities and order, with the row's seeded generator (NaN
    probabilities raise)."""
    import torch

    return order[torch.multinomial(probs, 1, generator=generator)[0]]
