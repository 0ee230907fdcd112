"""Does the model answer identity questions with its new name and author, and no longer with the old ones?

The questions (identity_prompts.py) are phrased unlike the rows of the self_cognition set, in Chinese and English.
A reply is correct when it names the target name and the target author and claims neither the old name nor the old
author. Names are matched case-insensitively; either language's value counts (a Chinese reply may name "Xiao Huang").
"""
from __future__ import annotations

from dataclasses import dataclass, field

from tunewise.evaluate.identity_prompts import HELDOUT_IDENTITY_QUESTIONS

LANGS = ("zh", "en")


@dataclass
class Identity:
    """A model identity: one or two names and authors (Chinese first, then English)."""

    names: list[str] = field(default_factory=list)
    authors: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.names or self.authors)

    def as_dict(self) -> dict:
        return {"model_name": list(self.names), "model_author": list(self.authors)}

    @classmethod
    def from_dict(cls, data: dict | None) -> "Identity":
        data = data or {}
        return cls(list(data.get("model_name") or []), list(data.get("model_author") or []))


def identity_questions() -> list[dict]:
    """[{"lang", "query"}] for every held-out identity question, Chinese first."""
    return [{"lang": lang, "query": q} for lang in LANGS for q in HELDOUT_IDENTITY_QUESTIONS[lang]]


def _mentions(text: str, values) -> bool:
    low = text.casefold()
    return any(v and v.casefold() in low for v in values)


def _old_only(old: list[str], new: list[str]) -> list[str]:
    """Old values that are not part of a new one ('Huang' is not an old claim when the new name is 'Xiao Huang')."""
    return [o for o in old if o and not any(o.casefold() in n.casefold() for n in new)]


def judge(reply: str, target: Identity, old: Identity | None = None) -> dict:
    """{"correct", "name", "author", "claims_old"} for one reply."""
    has_name = _mentions(reply, target.names) if target.names else True
    has_author = _mentions(reply, target.authors) if target.authors else True
    claims_old = False
    if old:
        claims_old = (_mentions(reply, _old_only(old.names, target.names))
                      or _mentions(reply, _old_only(old.authors, target.authors)))
    return {"correct": bool(target) and has_name and has_author and not claims_old,
            "name": has_name, "author": has_author, "claims_old": claims_old}


def score(replies: list[str], questions: list[dict], target: Identity,
          old: Identity | None = None) -> tuple[dict, list[dict]]:
    """Accuracy over all questions and per language, and the share of replies claiming the old identity;
    also the verdict for each reply."""
    verdicts = [judge(r, target, old) for r in replies]
    out = {"identity_accuracy": _share(v["correct"] for v in verdicts)}
    for lang in LANGS:
        out[f"identity_accuracy_{lang}"] = _share(v["correct"] for v, q in zip(verdicts, questions) if q["lang"] == lang)
    out["identity_claims_old"] = _share(v["claims_old"] for v in verdicts)
    return out, verdicts


def _share(flags) -> float | None:
    flags = list(flags)
    return sum(bool(f) for f in flags) / len(flags) if flags else None
