#!/usr/bin/env python3
"""Write the built-in preference set `concise` (and `concise_heldout`) for `tunewise dpo`.

    python scripts/build_preference_set.py

What it teaches: prefer the concise answer to a padded one. The rejected reply is the chosen one wrapped in a
greeting ("你好！", "Hi there! ") and/or a pleasantry ("有什么可以帮你的吗？", "Nice to meet you."). The embedded
model pads by itself where its identity answers do ("hello" -> "Hello! I am TinyWise, ... How can I help you?");
those rows pair its own padded answer (rejected) with the answer stripped of the padding (chosen). The other rows
pad answers the model gives plainly (identity, additions, copy tasks), so the preference is learnt as a rule, not
as a list of questions, and those answers are anchored while it is learnt.

The held-out part uses what training never shows: the identity questions of every third padded answer, the
identity phrasings of evaluate/identity_prompts.py, new greetings, held-out additions (evaluate/skills.py), and
pleasantries and greetings that occur nowhere in training. Rows whose rejected reply is what the base model says
carry "natural": true.
"""
from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tunewise.evaluate.identity_prompts import HELDOUT_IDENTITY_QUESTIONS  # noqa: E402
from tunewise.evaluate.skills import (  # noqa: E402
    ADDITION_LIMIT,
    addition_answer,
    addition_prompt,
    heldout_addition_pairs,
    is_heldout_addition,
)

OUT = ROOT / "src/tunewise/data/builtin"
META = ROOT / "src/tunewise/models/builtin/tunewise-tiny/tunewise.json"
GREETINGS = {"zh": ["你好！", "嗨！", "您好！"], "en": ["Hello! ", "Hi! ", "Hi there! "]}
PLEASANTRIES = {"zh": ["有什么可以帮你的吗？", "很高兴认识你。", "今天有什么可以帮你？", "很高兴为你服务。"],
                "en": ["How can I help you?", "Nice to meet you.", "How can I help you today?", "I hope this helps!"]}
HELDOUT_GREETINGS = {"zh": ["早上好！", "哈喽！"], "en": ["Good morning! ", "Hey! "]}
HELDOUT_PLEASANTRIES = {"zh": ["还有其他问题吗？", "祝你今天愉快！"],
                        "en": ["Let me know if you need anything else.", "Have a nice day!"]}
NEW_GREETING_PROMPTS = {"zh": ["你好啊", "晚上好", "嗨，你好", "哈喽"], "en": ["Hey there", "Good evening", "Hello there", "Hey"]}
# padding as the model's own answers have it (self_cognition.jsonl)
_LEADING = re.compile(r"^(你好|嗨|早上好|Hello|Hi there|Hi|Good morning)[！!，,]\s*")
_TRAILING = re.compile(r"[，,]?\s*(有什么可以帮你的吗？|今天有什么可以帮你？|很高兴认识你。|How can I help you( today)?\?|"
                       r"Nice to meet you\.)$")
COPY_WORDS = "alpha river stone cloud maple tiger lemon violet copper garden silver planet".split()


def lang_of(text: str) -> str:
    return "zh" if re.search(r"[\u4e00-\u9fff]", text) else "en"


def strip_padding(answer: str) -> str:
    core = _TRAILING.sub("", _LEADING.sub("", answer))
    if core != answer and core and core[-1] not in "。.!！?？":
        core += "。" if lang_of(core) == "zh" else "."
    return core[:1].upper() + core[1:]


def pad(answer: str, lang: str, rng: random.Random, greetings: dict, pleasantries: dict) -> str:
    """The answer with a greeting, a pleasantry, or both (a separator where the answer has no end mark)."""
    how = rng.choice(("greeting", "pleasantry", "both"))
    text = answer
    if how in ("pleasantry", "both"):
        sep = "" if answer[-1:] in "。！？.!?" else ("。" if lang == "zh" else ".")
        text = text + sep + ("" if lang == "zh" else " ") + rng.choice(pleasantries[lang])
    if how in ("greeting", "both"):
        text = rng.choice(greetings[lang]) + text
    return text


def identity_rows(rng: random.Random) -> tuple[list[dict], list[dict]]:
    meta = json.loads(META.read_text(encoding="utf-8"))["default_identity"]

    def fill(text: str, lang: str) -> str:
        i = 0 if lang == "zh" else 1
        return text.replace("{{NAME}}", meta["model_name"][i]).replace("{{AUTHOR}}", meta["model_author"][i])

    rows = [json.loads(line) for line in (OUT / "self_cognition.jsonl").read_text(encoding="utf-8").splitlines()]
    train, heldout, padded = [], [], 0
    for row in rows:
        lang, answer = row["tag"], fill(row["response"], row["tag"])
        core = strip_padding(answer)
        if core != answer:  # the model's own padded answer
            padded += 1
            if padded % 3 == 0:
                heldout.append({"prompt": row["query"], "chosen": core, "rejected": answer, "natural": True})
                continue
            train.append({"prompt": row["query"], "chosen": core, "rejected": answer, "natural": True})
        train.append({"prompt": row["query"], "chosen": core, "rejected": pad(core, lang, rng, GREETINGS, PLEASANTRIES)})
    generic = {"zh": fill("我是{{NAME}}，一个由{{AUTHOR}}训练的人工智能助手。", "zh"),
               "en": fill("I am {{NAME}}, an AI assistant developed by {{AUTHOR}}.", "en")}
    for lang in ("zh", "en"):
        for q in HELDOUT_IDENTITY_QUESTIONS[lang] + NEW_GREETING_PROMPTS[lang]:
            heldout.append({"prompt": q, "chosen": generic[lang],
                            "rejected": pad(generic[lang], lang, rng, HELDOUT_GREETINGS, HELDOUT_PLEASANTRIES)})
    return train, heldout


def skill_rows(rng: random.Random, count: int, heldout: bool) -> list[dict]:
    """Additions (and, in training, copy tasks) answered plainly versus padded."""
    rows = []
    if heldout:
        pairs = rng.sample(heldout_addition_pairs(), count)
    else:
        pairs = []
        while len(pairs) < count:
            a, b = rng.randrange(ADDITION_LIMIT), rng.randrange(ADDITION_LIMIT)
            if not is_heldout_addition(a, b) and (a, b) not in pairs:
                pairs.append((a, b))
    greetings, pleasantries = (HELDOUT_GREETINGS, HELDOUT_PLEASANTRIES) if heldout else (GREETINGS, PLEASANTRIES)
    for i, (a, b) in enumerate(pairs):
        prompt, answer = addition_prompt(a, b, i), addition_answer(a, b)
        rows.append({"prompt": prompt, "chosen": answer,
                     "rejected": pad(answer, lang_of(prompt), rng, greetings, pleasantries)})
    if not heldout:
        for _ in range(count // 2):
            text = " ".join(rng.sample(COPY_WORDS, rng.randint(1, 3)))
            rows.append({"prompt": f"Repeat: {text}", "chosen": text,
                         "rejected": pad(text, "en", rng, greetings, pleasantries)})
    return rows


def main() -> None:
    rng = random.Random(20261123)
    train, heldout = identity_rows(rng)
    train += skill_rows(rng, 60, heldout=False)
    heldout += skill_rows(rng, 16, heldout=True)
    rng.shuffle(train)
    for name, rows in (("concise", train), ("concise_heldout", heldout)):
        path = OUT / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        print(f"wrote {path}: {len(rows)} pairs, {sum(r.get('natural', False) for r in rows)} with the model's own "
              "padded answer")


if __name__ == "__main__":
    main()
