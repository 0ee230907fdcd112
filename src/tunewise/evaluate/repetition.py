"""Symptoms of an over-trained model: replies that loop, parrot a training answer, or never end.

- looping: some n-gram (default 4 units) occurs `min_count` (3) or more times in one reply; a unit is one CJK
  character or one run of letters/digits, so Chinese and English are measured alike;
- parroting: the reply to a general (non-identity) prompt equals a training response, or contains one of at least
  `min_chars` characters, while it is not the expected answer;
- running on: the reply reached --max_new_tokens without an end-of-turn token.
"""
from __future__ import annotations

import re
from collections import Counter

_UNIT = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]|[^\W\u3400-\u9fff\uf900-\ufaff]+")
_SPACE = re.compile(r"\s+")


def units(text: str) -> list[str]:
    return [u.casefold() for u in _UNIT.findall(text)]


def repeated_ngram(text: str, n: int = 4, min_count: int = 3) -> str | None:
    """The most frequent n-gram when it occurs at least `min_count` times, else None."""
    seq = units(text)
    if len(seq) < n * min_count:
        return None
    gram, count = Counter(tuple(seq[i:i + n]) for i in range(len(seq) - n + 1)).most_common(1)[0]
    return " ".join(gram) if count >= min_count else None


def normalize(text: str) -> str:
    return _SPACE.sub(" ", text).strip().casefold()


def copied_training_answer(reply: str, training_responses, reference: str | None = None,
                           min_chars: int = 8) -> str | None:
    """The training response the reply equals or contains (at least `min_chars` long), else None. A reply that is
    the reference answer itself is never a copy."""
    r = normalize(reply)
    if not r or (reference is not None and r == normalize(reference)):
        return None
    for resp in training_responses:
        t = normalize(resp)
        if t and (r == t or (len(t) >= min_chars and t in r)):
            return resp
    return None


def repetition_metrics(generations, general_replies=(), training_responses=(), references=(), n: int = 4,
                       min_count: int = 3) -> tuple[dict, dict]:
    """Shares over all `generations` (models.generate.Reply objects) of looping and running-on replies, and over
    `general_replies` (texts, with their `references`) of parroted training answers. Returns (metrics, examples)."""
    generations = list(generations)
    loops = [(g.text, gram) for g in generations if (gram := repeated_ngram(g.text, n, min_count))]
    long = [g.text for g in generations if g.finish_reason == "length"]
    metrics = {
        "repeated_ngram_share": len(loops) / len(generations) if generations else None,
        "hit_token_limit_share": len(long) / len(generations) if generations else None,
    }
    examples = {"repeated_ngram": [{"reply": t, "ngram": g} for t, g in loops[:5]], "hit_token_limit": long[:5]}
    training = list(dict.fromkeys(training_responses))
    if training and general_replies:
        refs = list(references) or [None] * len(general_replies)
        copies = [(reply, src) for reply, ref in zip(general_replies, refs)
                  if (src := copied_training_answer(reply, training, ref))]
        metrics["copied_training_answer_share"] = len(copies) / len(general_replies)
        examples["copied_training_answer"] = [{"reply": r, "training_response": s} for r, s in copies[:5]]
    else:
        metrics["copied_training_answer_share"] = None
    return metrics, examples
