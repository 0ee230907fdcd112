#!/usr/bin/env python3
"""Write the built-in `additions` GRPO prompt set: every addition a+b (a, b < 50) outside the 200 held-out pairs that
evaluation uses (evaluate/skills.py), once each, its prompt phrased in one of the five trained templates (rotating),
with the sum as its `solution` (ms-swift's GRPO row form: messages + solution).

    python scripts/make_grpo_additions.py    # -> src/tunewise/data/builtin/additions.jsonl (2300 rows)
"""
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from tunewise.evaluate.skills import ADDITION_LIMIT, addition_prompt, is_heldout_addition  # noqa: E402

pairs = [(a, b) for a in range(ADDITION_LIMIT) for b in range(ADDITION_LIMIT) if not is_heldout_addition(a, b)]
random.Random(20261204).shuffle(pairs)
rows = [{"messages": [{"role": "user", "content": addition_prompt(a, b, i)}], "solution": str(a + b)}
        for i, (a, b) in enumerate(pairs)]
out = ROOT / "src/tunewise/data/builtin/additions.jsonl"
out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
print(f"wrote {len(rows)} rows to {out}")
