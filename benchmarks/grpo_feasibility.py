#!/usr/bin/env python3
"""Can GRPO raise the embedded model's held-out addition accuracy on 2 CPU cores? TRL's GRPOTrainer used directly
(not through tunewise's recipes), the reward the exact sum, the prompts additions outside the 200 held-out pairs.

    PYTHONPATH=src nice -n 10 python benchmarks/grpo_feasibility.py --steps 40 --seed 1 --out /tmp/grpo1

Prints and writes (OUT/result.json) the settings, the held-out accuracy (greedy, the 200 pairs of
evaluate/skills.py) before, every --eval_every steps and after, whether the greedy identity answers changed, and the
wall time of training alone.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--num_generations", type=int, default=8)
    p.add_argument("--prompts_per_step", type=int, default=4)
    p.add_argument("--steps_per_generation", type=int, default=1,
                   help="optimizer steps per generation round (TRL generates steps_per_generation batches at once)")
    p.add_argument("--num_iterations", type=int, default=1)
    p.add_argument("--max_completion_length", type=int, default=16)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--learning_rate", type=float, default=2e-5)
    p.add_argument("--beta", type=float, default=0.0)
    p.add_argument("--loss_type", default="dapo")
    p.add_argument("--train_type", choices=("full", "lora"), default="full")
    p.add_argument("--lora_rank", type=int, default=8)
    p.add_argument("--hard_only", type=float, default=0.0,
                   help="train only on prompts whose correct reply the base model gives with probability below this "
                        "(teacher-forced; 0: every prompt)")
    p.add_argument("--eval_every", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="/tmp/grpo_feasibility")
    return p.parse_args()


def train_prompts(seed: int) -> list[dict]:
    """Every non-held-out pair once, in a random template, as TRL conversational rows with the solution column."""
    from tunewise.evaluate.skills import ADDITION_LIMIT, ADDITION_TEMPLATES, addition_prompt, is_heldout_addition

    rng = random.Random(seed)
    rows = [{"prompt": [{"role": "user", "content": addition_prompt(a, b, rng.randrange(len(ADDITION_TEMPLATES)))}],
             "solution": str(a + b)}
            for a in range(ADDITION_LIMIT) for b in range(ADDITION_LIMIT) if not is_heldout_addition(a, b)]
    rng.shuffle(rows)
    return rows


def exact_sum(prompts, completions, solution, **kwargs) -> list[float]:
    from tunewise.evaluate.skills import addition_correct

    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [1.0 if addition_correct(t, s) else 0.0 for t, s in zip(texts, solution)]


def identity_replies(model, tokenizer) -> list[str]:
    from tunewise.models.generate import greedy_replies
    from tunewise.evaluate.identity import identity_questions

    return greedy_replies(model, tokenizer, [[{"role": "user", "content": q["query"]}] for q in identity_questions()],
                          max_new_tokens=48)


def main():
    args = parse()
    import torch

    torch.set_num_threads(args.threads)
    from transformers import TrainerCallback, set_seed
    from trl import GRPOConfig, GRPOTrainer

    from tunewise.evaluate.skills import addition_accuracy
    from tunewise.models.load import load_model, load_tokenizer, resolve_model

    set_seed(args.seed)
    path = resolve_model("tunewise-tiny")
    tokenizer = load_tokenizer(path)
    model = load_model(path, dtype="float32")
    model.eval()
    base_acc = addition_accuracy(model, tokenizer)
    base_identity = identity_replies(model, tokenizer)
    print(f"base held-out accuracy {base_acc:.3f}", flush=True)

    from datasets import Dataset

    rows = train_prompts(args.seed)
    if args.hard_only:
        rows = hard_prompts(model, tokenizer, rows, args.hard_only)
        print(f"hard prompts: {len(rows)}", flush=True)
    dataset = Dataset.from_list(rows)

    peft_config = None
    if args.train_type == "lora":
        from peft import LoraConfig

        peft_config = LoraConfig(r=args.lora_rank, lora_alpha=4 * args.lora_rank, target_modules="all-linear",
                                 task_type="CAUSAL_LM")
    batch = args.num_generations * args.prompts_per_step
    config = GRPOConfig(
        output_dir=args.out, seed=args.seed, max_steps=args.steps, learning_rate=args.learning_rate,
        lr_scheduler_type="constant", warmup_steps=0,
        per_device_train_batch_size=batch, gradient_accumulation_steps=1,
        num_generations=args.num_generations, max_completion_length=args.max_completion_length,
        steps_per_generation=args.steps_per_generation, num_iterations=args.num_iterations,
        temperature=args.temperature, beta=args.beta, loss_type=args.loss_type,
        logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, bf16=False,
        dataloader_num_workers=0, disable_tqdm=True,
    )
    curve = []

    class Probe(TrainerCallback):
        def on_step_end(self, a, state, control, model=None, **kw):
            if state.global_step % args.eval_every == 0 and state.global_step < args.steps:
                model.eval()
                acc = addition_accuracy(model, tokenizer)
                model.train()
                curve.append({"step": state.global_step, "accuracy": acc, "elapsed_s": time.time() - start})
                print(f"step {state.global_step}: held-out accuracy {acc:.3f}", flush=True)

    trainer = GRPOTrainer(model=model, reward_funcs=[exact_sum], args=config, train_dataset=dataset,
                          processing_class=tokenizer, peft_config=peft_config, callbacks=[Probe()])
    start = time.time()
    trainer.train()
    wall = time.time() - start
    tuned = trainer.model
    tuned.eval()
    after_acc = addition_accuracy(tuned, tokenizer)
    after_identity = identity_replies(tuned, tokenizer)
    same = sum(a == b for a, b in zip(base_identity, after_identity))
    rewards = [h.get("reward") for h in trainer.state.log_history if "reward" in h]
    result = {"settings": vars(args), "per_device_train_batch_size": batch, "base_accuracy": base_acc,
              "after_accuracy": after_acc, "curve": curve, "train_wall_s": wall,
              "identity_unchanged": f"{same}/{len(base_identity)}", "reward_per_step": rewards,
              "torch_threads": torch.get_num_threads()}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "result.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps({k: v for k, v in result.items() if k != "reward_per_step"}, indent=1))
    print("reward per step:", " ".join(f"{r:.2f}" for r in rewards))


def hard_prompts(model, tokenizer, rows: list[dict], threshold: float = 0.9) -> list[dict]:
    """The rows whose correct reply ("a+b=c" and the end of turn) the model gives with probability below
    `threshold` (teacher-forced: one forward pass per batch, no sampling)."""
    import torch

    from tunewise.data.template import render

    keep = []
    tokenizer.padding_side = "right"
    for start in range(0, len(rows), 100):
        chunk = rows[start:start + 100]
        prompts = [render(tokenizer, r["prompt"]) for r in chunk]
        replies = [reply_text(r) + "<|im_end|>" for r in chunk]
        enc = tokenizer([p + a for p, a in zip(prompts, replies)], return_tensors="pt", padding=True,
                        add_special_tokens=False)
        starts = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
        with torch.no_grad():
            logps = torch.log_softmax(model(**enc).logits[:, :-1].float(), -1)
        targets = enc["input_ids"][:, 1:]
        token_logps = logps.gather(-1, targets.unsqueeze(-1)).squeeze(-1) * enc["attention_mask"][:, 1:]
        for i, r in enumerate(chunk):
            if token_logps[i, starts[i] - 1:].sum().exp().item() < threshold:
                keep.append(r)
    return keep


def reply_text(row: dict) -> str:
    import re

    a, b = (int(x) for x in re.findall(r"\d+", row["prompt"][0]["content"])[:2])
    return f"{a}+{b}={a + b}"


if __name__ == "__main__":
    main()
