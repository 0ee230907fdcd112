#!/usr/bin/env python3
"""Write the built-in `tiny_skills` set: the embedded model's measurable general skill, additions a+b outside the
200 held-out pairs, drawn from its pretraining corpus, to mix into an identity fine-tune so that the skill is kept,
the way ms-swift's self-cognition recipe mixes alpaca-gpt4 data into self_cognition. (The corpus also has copy
tasks, but the model never learnt them, 0 of 20 copied: rows of a skill it lacks would teach, not keep.)

    python scripts/make_tiny_skills.py    # -> src/tunewise/data/builtin/tiny_skills.jsonl
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from build_tiny_model import Corpus  # noqa: E402

corpus = Corpus(seed=12345)
rows = [corpus.addition() for _ in range(500)]
out = ROOT / "src/tunewise/data/builtin/tiny_skills.jsonl"
out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
print(f"wrote {len(rows)} rows to {out}")
