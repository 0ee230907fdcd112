#!/usr/bin/env python3
"""Write the built-in `tiny_skills` set: general-skill rows (additions outside the held-out pairs, copy tasks) drawn
from the embedded model's pretraining corpus, to mix into a fine-tune so it keeps those skills, the way ms-swift's
self-cognition recipe mixes alpaca-gpt4 data into self_cognition.

    python scripts/make_tiny_skills.py    # -> src/tunewise/data/builtin/tiny_skills.jsonl
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from build_tiny_model import Corpus  # noqa: E402

corpus = Corpus(seed=12345)
rows = [corpus.addition() for _ in range(400)] + [corpus.copy() for _ in range(100)]
out = ROOT / "src/tunewise/data/builtin/tiny_skills.jsonl"
out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
print(f"wrote {len(rows)} rows to {out}")
