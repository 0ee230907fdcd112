"""General skills of the embedded model that a fine-tune should not destroy.

The pretraining corpus (scripts/build_tiny_model.py) and the evaluation share these definitions, so the
held-out additions are never trained on and the prompts are phrased the same way in both.
"""
from __future__ import annotations

import random
import re

ADDITION_LIMIT = 50  # operands are 0 .. ADDITION_LIMIT-1
HELDOUT_SEED = 20261123
HELDOUT_COUNT = 200

ADDITION_TEMPLATES = (
    "{a}+{b}=?",
    "What is {a} + {b}?",
    "Compute {a}+{b}.",
    "计算 {a}+{b}",
    "{a}加{b}等于多少？",
)


def heldout_addition_pairs() -> list[tuple[int, int]]:
    """The 200 (a, b) pairs kept out of pretraining, always the same."""
    pairs = [(a, b) for a in range(ADDITION_LIMIT) for b in range(ADDITION_LIMIT)]
    random.Random(HELDOUT_SEED).shuffle(pairs)
    return sorted(pairs[:HELDOUT_COUNT])


_HELDOUT = frozenset(heldout_addition_pairs())


def is_heldout_addition(a: int, b: int) -> bool:
    return (a, b) in _HELDOUT


def addition_prompt(a: int, b: int, template_index: int = 0) -> str:
    return ADDITION_TEMPLATES[template_index % len(ADDITION_TEMPLATES)].format(a=a, b=b)


def addition_eval_set() -> list[dict]:
    """Held-out addition prompts with their reference answer, templates rotating."""
    return [
        {"query": addition_prompt(a, b, i), "reference": str(a + b)}
        for i, (a, b) in enumerate(heldout_addition_pairs())
    ]


def addition_answer(a: int, b: int) -> str:
    """The trained reply: the sum restated, "23+15=38" (the operands next to the answer make it learnable)."""
    return f"{a}+{b}={a + b}"


def addition_correct(reply: str, reference: str) -> bool:
    """Correct when the number after the last '=' (or, without one, the first number) is the sum."""
    tail = reply.rsplit("=", 1)[-1]
    numbers = re.findall(r"-?\d+", tail)
    return bool(numbers) and numbers[0] == reference


def addition_accuracy(model, tokenizer, system: str | None = None) -> float:
    """Exact-answer accuracy on the 200 held-out additions (greedy)."""
    from tunewise.models.generate import greedy_replies

    items = addition_eval_set()
    replies = greedy_replies(model, tokenizer, [[{"role": "user", "content": it["query"]}] for it in items],
                             max_new_tokens=8, system=system)
    return sum(addition_correct(r, it["reference"]) for r, it in zip(replies, items)) / len(items)
