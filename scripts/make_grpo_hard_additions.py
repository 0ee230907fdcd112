#!/usr/bin/env python3
"""Write the built-in `additions_hard` GRPO prompt set: the additions the embedded model is not yet sure of.

Every addition a+b (a, b < 50) outside the 200 held-out pairs of evaluation (evaluate/skills.py), in each of the five
trained phrasings (11,500 prompts), is scored by one teacher-forced forward pass of tunewise-tiny: the probability
that it replies exactly "a+b=c" and ends its turn. The prompts below --threshold are kept, in a fixed shuffled
order, each with its sum as `solution` (ms-swift's GRPO row form). The score is deterministic (no sampling), so the
file is shipped rather than made at run time: a GRPO run on the whole `additions` set gets almost only groups of 8
correct completions (the model answers ~98 % of them), whose advantages, and so gradient, are zero.

    python scripts/make_grpo_hard_additions.py    # -> src/tunewise/data/builtin/additions_hard.jsonl

Rebuild it whenever the embedded model is rebuilt (scripts/build_tiny_model.py).
"""
import argparse
import json
import os
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tunewise.evaluate.skills import (ADDITION_LIMIT, ADDITION_TEMPLATES, addition_answer,  # noqa: E402
                                      addition_prompt, heldout_addition_pairs, is_heldout_addition)

OUT = ROOT / "src/tunewise/data/builtin/additions_hard.jsonl"


def reply_probabilities(model, tokenizer, prompts: list[str], replies: list[str], batch: int = 200) -> list[float]:
    """P(reply | prompt) under teacher forcing: the product of the reply tokens' probabilities (the end-of-turn
    token included in `replies`)."""
    import torch

    from tunewise.data.template import render

    tokenizer.padding_side = "right"
    probs = []
    for start in range(0, len(prompts), batch):
        heads = [render(tokenizer, [{"role": "user", "content": p}]) for p in prompts[start:start + batch]]
        tails = replies[start:start + batch]
        enc = tokenizer([h + t for h, t in zip(heads, tails)], return_tensors="pt", padding=True,
                        add_special_tokens=False)
        starts = [len(tokenizer(h, add_special_tokens=False)["input_ids"]) for h in heads]
        with torch.no_grad():
            logps = torch.log_softmax(model(**enc).logits[:, :-1].float(), -1)
        token_logps = logps.gather(-1, enc["input_ids"][:, 1:].unsqueeze(-1)).squeeze(-1)
        token_logps = token_logps * enc["attention_mask"][:, 1:]
        probs += [token_logps[i, s - 1:].sum().exp().item() for i, s in enumerate(starts)]
    return probs


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threshold", type=float, default=0.9, help="keep prompts answered exactly with p below this")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--model", default="tunewise-tiny", help="the model to score with (a candidate rebuild, say)")
    args = p.parse_args()

    import torch

    from tunewise.models.load import load_model, load_tokenizer, resolve_model

    torch.set_num_threads(min(2, torch.get_num_threads()))
    path = resolve_model(args.model)
    tokenizer, model = load_tokenizer(path), load_model(path, dtype="float32").eval()
    items = [(a, b, k) for a in range(ADDITION_LIMIT) for b in range(ADDITION_LIMIT) if not is_heldout_addition(a, b)
             for k in range(len(ADDITION_TEMPLATES))]
    probs = reply_probabilities(model, tokenizer, [addition_prompt(a, b, k) for a, b, k in items],
                                [addition_answer(a, b) + "<|im_end|>" for a, b, _ in items])
    kept = [(a, b, k) for (a, b, k), q in zip(items, probs) if q < args.threshold]
    random.Random(20261205).shuffle(kept)
    rows = [{"messages": [{"role": "user", "content": addition_prompt(a, b, k)}], "solution": str(a + b)}
            for a, b, k in kept]
    args.out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    below = {t: sum(q < t for q in probs) for t in (0.5, 0.9, 0.99)}
    print(f"{len(items)} prompts scored; below 0.5: {below[0.5]}, 0.9: {below[0.9]}, 0.99: {below[0.99]}; "
          f"mean {sum(probs) / len(probs):.3f}")
    held = [(a, b, k) for k, (a, b) in enumerate(heldout_addition_pairs())]  # as evaluation phrases them
    held_probs = reply_probabilities(model, tokenizer, [addition_prompt(a, b, k) for a, b, k in held],
                                     [addition_answer(a, b) + "<|im_end|>" for a, b, _ in held])
    print(f"the {len(held)} held-out pairs: below 0.5: {sum(q < 0.5 for q in held_probs)}, mean "
          f"{sum(held_probs) / len(held_probs):.3f} (the gap to the trained prompts is what training on them "
          "cannot carry over)")
    print(f"wrote {len(rows)} rows (p < {args.threshold}) to {args.out}")


if __name__ == "__main__":
    main()
