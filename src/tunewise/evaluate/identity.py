"""Does the model answer identity questions with its new name and author, and no longer with the old ones?

The questions (identity_prompts.py) are phrased unlike the rows of the self_cognition set, in Chinese and English.
A reply is correct when it names the target name and the target author cleanly and claims neither the old name nor
the old author. Cleanly: each stands as a word of its own, once, as in every trained answer — an English value not
run into further letters or digits, a Chinese one not run into further hanzi except those that stand next to
{{NAME}} / {{AUTHOR}} in the built-in self_cognition answers (是小黄，/ 由魔搭开发), so a made-up 小黄搭 or a reply
that names 小黄 twice ("我是小黄，由魔搭训练的小黄。") is not correct. `mentions` keeps the lenient reading (the
values appear anywhere, as substrings). Values are matched case-insensitively; either language's value counts (a
Chinese reply may name "Xiao Huang").
"""
from __future__ import annotations

import functools
import json
import re
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


def _hanzi(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf"


@functools.cache
def trained_neighbours(placeholder: str) -> tuple[frozenset, frozenset]:
    """The hanzi standing right before and right after `placeholder` ("{{NAME}}" or "{{AUTHOR}}") in the built-in
    self_cognition answers: 是/叫/的... before a name, none after it (a comma or full stop follows)."""
    from tunewise.data.formats import BUILTIN_DATASETS

    before, after = set(), set()
    for line in BUILTIN_DATASETS["self_cognition"].read_text(encoding="utf-8").splitlines():
        text = json.loads(line)["response"]
        for part in text.split(placeholder)[:-1]:
            if part and _hanzi(part[-1]):
                before.add(part[-1])
        for part in text.split(placeholder)[1:]:
            if part and _hanzi(part[0]):
                after.add(part[0])
    return frozenset(before), frozenset(after)


def _apart(edge: str, neighbour: str, allowed: frozenset) -> bool:
    """Is a value ending in `edge` a word of its own beside `neighbour` ("" at either end of the reply)?"""
    if _hanzi(edge):
        return not _hanzi(neighbour) or neighbour in allowed
    if edge.isalnum():
        return not (neighbour.isalnum() and not _hanzi(neighbour))
    return True


def _names_cleanly(text: str, values, placeholder: str) -> bool:
    """At least one of `values` stands in `text` as a word of its own, and none of them twice or inside a word."""
    before, after = trained_neighbours(placeholder)
    low, found = text.casefold(), 0
    for value in dict.fromkeys(v.casefold() for v in values if v):
        starts = [m.start() for m in re.finditer(re.escape(value), low)]
        if len(starts) > 1:
            return False
        for i in starts:
            end = i + len(value)
            if not (_apart(value[0], low[i - 1] if i else "", before)
                    and _apart(value[-1], low[end] if end < len(low) else "", after)):
                return False
        found += len(starts)
    return found > 0


def _old_only(old: list[str], new: list[str]) -> list[str]:
    """Old values that are not part of a new one ('Huang' is not an old claim when the new name is 'Xiao Huang')."""
    return [o for o in old if o and not any(o.casefold() in n.casefold() for n in new)]


def judge(reply: str, target: Identity, old: Identity | None = None) -> dict:
    """{"correct", "mentions", "name", "author", "name_clean", "author_clean", "claims_old"} for one reply: `correct`
    names the target name and author cleanly, `mentions` only contains them (and neither claims the old identity)."""
    has_name = _mentions(reply, target.names) if target.names else True
    has_author = _mentions(reply, target.authors) if target.authors else True
    name_clean = _names_cleanly(reply, target.names, "{{NAME}}") if target.names else True
    author_clean = _names_cleanly(reply, target.authors, "{{AUTHOR}}") if target.authors else True
    claims_old = False
    if old:
        claims_old = (_mentions(reply, _old_only(old.names, target.names))
                      or _mentions(reply, _old_only(old.authors, target.authors)))
    mentions = bool(target) and has_name and has_author and not claims_old
    return {"correct": mentions and name_clean and author_clean, "mentions": mentions,
            "name": has_name, "author": has_author, "name_clean": name_clean, "author_clean": author_clean,
            "claims_old": claims_old}


def score(replies: list[str], questions: list[dict], target: Identity,
          old: Identity | None = None) -> tuple[dict, list[dict]]:
    """Accuracy (names the identity cleanly) over all questions and per language, the same share for replies that
    only mention it (identity_mentions*), and the share of replies claiming the old identity; also the verdict for
    each reply."""
    verdicts = [judge(r, target, old) for r in replies]
    out = {}
    for metric, key in (("identity_accuracy", "correct"), ("identity_mentions", "mentions")):
        out[metric] = _share(v[key] for v in verdicts)
        for lang in LANGS:
            out[f"{metric}_{lang}"] = _share(v[key] for v, q in zip(verdicts, questions) if q["lang"] == lang)
    out["identity_claims_old"] = _share(v["claims_old"] for v in verdicts)
    return out, verdicts


def _share(flags) -> float | None:
    flags = list(flags)
    return sum(bool(f) for f in flags) / len(flags) if flags else None
