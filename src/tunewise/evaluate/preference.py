"""Score a policy on preference pairs: implicit-reward accuracy, log-prob ranking, and the reply-language check.

* `pair_logps`: the summed log-probability of the chosen and of the rejected reply given the prompt, computed as
  TRL's DPOTrainer does (chat template, completion = what follows the rendered prompt, end-of-turn included).
* implicit-reward accuracy: share of pairs with beta*(log pi - log ref)(chosen) > (rejected), what DPO logs as
  `rewards/accuracies`; 0 for the starting policy (all ties), 0.5 if ties counted as half.
* ranking accuracy: share of pairs where the model itself gives the chosen reply the higher log-probability.
* `reply_accuracy`: the direct check of the taught behaviour: the greedy reply is closer to the chosen reply than
  to the rejected one (difflib ratio) and in its language (it holds a CJK character exactly when the chosen does).

    tunewise eval --adapters CKPT --preference_dataset concise_heldout
"""
from __future__ import annotations

import re

from tunewise.data.template import template_ids

_CJK = re.compile(r"[\u4e00-\u9fff]")


def pair_logps(model, tokenizer, rows: list[dict]) -> list[tuple[float, float]]:
    """[(log p(chosen | prompt), log p(rejected | prompt))] for TRL rows {prompt, chosen, rejected}."""
    import torch

    out = []
    for row in rows:
        prompt = template_ids(tokenizer, row["prompt"], True)
        seqs = [template_ids(tokenizer, row["prompt"] + row[key]) for key in ("chosen", "rejected")]
        width = max(map(len, seqs))
        pad = tokenizer.pad_token_id
        input_ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs])
        attention = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
        with torch.no_grad():
            logits = model(input_ids=input_ids, attention_mask=attention).logits[:, :-1].float()
        token_logps = torch.log_softmax(logits, -1).gather(-1, input_ids[:, 1:, None])[..., 0]
        mask = torch.zeros_like(token_logps)
        for i, s in enumerate(seqs):
            mask[i, len(prompt) - 1:len(s) - 1] = 1  # positions predicting the completion tokens
        sums = (token_logps * mask).sum(-1)
        out.append((sums[0].item(), sums[1].item()))
    return out


def implicit_reward_accuracy(policy: list[tuple[float, float]], reference: list[tuple[float, float]]) -> float:
    wins = [(pc - rc) > (pr - rr) for (pc, pr), (rc, rr) in zip(policy, reference)]
    return sum(wins) / len(wins)


def ranking_accuracy(logps: list[tuple[float, float]]) -> float:
    return sum(c > r for c, r in logps) / len(logps)


def prefers_chosen(reply: str, chosen: str, rejected: str) -> bool:
    from difflib import SequenceMatcher

    closer = SequenceMatcher(None, reply, chosen).ratio() > SequenceMatcher(None, reply, rejected).ratio()
    return closer and bool(_CJK.search(reply)) == bool(_CJK.search(chosen))


def reply_accuracy(model, tokenizer, rows: list[dict], system: str | None = None) -> tuple[float, list[str]]:
    """(share of greedy replies that side with the chosen reply, the replies)."""
    from tunewise.models.generate import greedy_replies

    replies = greedy_replies(model, tokenizer, [row["prompt"] for row in rows], max_new_tokens=48, system=system)
    right = [prefers_chosen(reply, row["chosen"][0]["content"], row["rejected"][0]["content"])
             for reply, row in zip(replies, rows)]
    return sum(right) / len(rows), replies


def score(model, tokenizer, rows: list[dict], reference=None, system: str | None = None) -> dict:
    """All three numbers for `rows` (TRL rows). `reference`: a model, or a callable context manager factory
    (e.g. a PeftModel's `disable_adapter`) under which `model` acts as the reference; None skips that number."""
    logps = pair_logps(model, tokenizer, rows)
    result = {"pairs": len(rows), "ranking_accuracy": ranking_accuracy(logps)}
    if reference is not None:
        if callable(reference) and not hasattr(reference, "forward"):
            with reference():
                ref_logps = pair_logps(model, tokenizer, rows)
        else:
            ref_logps = pair_logps(reference, tokenizer, rows)
        result["implicit_reward_accuracy"] = implicit_reward_accuracy(logps, ref_logps)
    result["reply_accuracy"], _ = reply_accuracy(model, tokenizer, rows, system)
    return result
