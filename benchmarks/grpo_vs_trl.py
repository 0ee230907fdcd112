#!/usr/bin/env python3
"""Does a GRPO step through tunewise cost more than TRL's GRPOTrainer alone, on the same settings?

    PYTHONPATH=src .venv/bin/python benchmarks/grpo_vs_trl.py [--rounds 3] [--steps 6] [--markdown FILE]

Both sides train the same LoRA (r 8, alpha 32, dropout 0.05, all-linear) of the same model in float32 on the same
prompts (the built-in `additions`), with the same GRPO settings (num_generations, max_completion_length,
temperature, beta and so the reference pass, per-device batch, accumulation, lr, seed; no gradient checkpointing) and
the same reward (the built-in accuracy). tunewise's side is a whole `tunewise rlhf --rlhf_type grpo` run as the CLI builds it: the flags
parsed and planned, its run directory, the trainer with every callback (logging.jsonl, schedule guard, NaN guard,
checkpoint publishing, ...) trained within the device plan's context (tunewise.train.fit). TRL's side is
GRPOTrainer(model=the model, peft_config=LoraConfig) with a GRPOConfig written out by hand. The settings both
trainers end up with are compared field by field before anything is timed.

A step's cost is the wall time from one optimizer step's end to the next (so everything a step does, callbacks and
logging included), the first step apart: it also pays one-time set-up (on both sides it takes several times a later
step). Rounds interleave the two sides (tunewise, TRL, tunewise, TRL, ...) in this one process so that the machine's
load drifts over both; the median of the later steps over all rounds is compared, in wall seconds (the goal) and in
CPU seconds of all threads (which other jobs on a shared machine move less). Generated lengths are printed
too, since a step's cost follows them.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SEED = 42
# the settings both sides share (tunewise flag -> value); GRPOConfig takes the same names
SHARED = {"num_generations": 8, "max_completion_length": 32, "temperature": 0.9, "beta": 0.04,
          "per_device_train_batch_size": 16, "gradient_accumulation_steps": 1, "learning_rate": 1e-5,
          "loss_type": "grpo", "epsilon": 0.2, "scale_rewards": "group"}
LORA = {"lora_rank": 8, "lora_alpha": 32, "lora_dropout": 0.05}
COMPARED = ("num_generations", "max_completion_length", "temperature", "beta", "per_device_train_batch_size",
            "gradient_accumulation_steps", "learning_rate", "loss_type", "epsilon", "epsilon_high", "scale_rewards",
            "steps_per_generation", "num_iterations", "importance_sampling_level", "top_k", "top_p",
            "repetition_penalty", "use_bias_correction_kl", "max_grad_norm", "weight_decay", "seed",
            "lr_scheduler_type", "warmup_steps", "bf16", "fp16", "activation_checkpointing", "use_cpu")


def tunewise_flags(steps: int, out: Path, model: str) -> list[str]:
    flags = ["--model", model, "--dataset", "additions", "--reward_funcs", "accuracy", "--train_type", "lora",
             "--target_modules", "all-linear", "--torch_dtype", "float32", "--max_steps", str(steps),
             "--warmup_steps", "0", "--lr_scheduler_type", "constant", "--weight_decay", "0.1", "--seed", str(SEED),
             "--save_steps", "100000", "--logging_steps", "1", "--report_to", "none", "--output_dir", str(out)]
    for name, value in {**SHARED, **LORA}.items():
        flags += [f"--{name}", str(value)]
    return flags


def tunewise_trainer(steps: int, out: Path, model: str):
    """(trainer, run, run dir) as `tunewise rlhf --rlhf_type grpo` builds them."""
    from tunewise.args import GrpoArgs
    from tunewise.flags import parse
    from tunewise.plan.resolve import resolve
    from tunewise.recipes.grpo import RECIPE
    from tunewise.train import build, rundir

    args, sources, _ = parse(GrpoArgs, tunewise_flags(steps, out, model))
    run = resolve(RECIPE, args, sources)
    run_dir, _, _ = rundir.open_run(run)
    return build.build_trainer(run, run_dir), run, run_dir


def trl_trainer(steps: int, out: Path, model: str, rows: list[dict]):
    """TRL's GRPOTrainer on its own: the model, a LoraConfig, a GRPOConfig written out."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
    from trl import GRPOConfig, GRPOTrainer

    from tunewise.models.load import resolve_model
    from tunewise.rewards.builtin import Accuracy, RewardArgs

    path = resolve_model(model)
    config = GRPOConfig(output_dir=str(out), max_steps=steps, lr_scheduler_type="constant", warmup_steps=0,
                        weight_decay=0.1, max_grad_norm=1.0, seed=SEED, data_seed=SEED, save_strategy="no",
                        logging_steps=1, report_to=[], use_cpu=True, bf16=False, disable_tqdm=True,
                        gradient_checkpointing=False,  # TRL's default is on, tunewise's (and this run's) off
                        remove_unused_columns=False, **SHARED)
    lora = LoraConfig(r=LORA["lora_rank"], lora_alpha=LORA["lora_alpha"], lora_dropout=LORA["lora_dropout"],
                      target_modules="all-linear", task_type="CAUSAL_LM")
    reward = Accuracy(RewardArgs(max_completion_length=SHARED["max_completion_length"]))
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), reward_funcs=[reward],
                          args=config, train_dataset=Dataset.from_list(rows),
                          processing_class=AutoTokenizer.from_pretrained(path), peft_config=lora)
    trainer.remove_callback(PrinterCallback)  # a printed dict per step (tunewise's side draws a progress bar)
    return trainer


def settings(trainer) -> dict:
    out = {name: getattr(trainer.args, name, None) for name in COMPARED}
    out["lr_scheduler_type"] = str(out["lr_scheduler_type"])
    model = trainer.model
    lora = model.peft_config["default"]
    out.update(lora_r=lora.r, lora_alpha=lora.lora_alpha, lora_dropout=lora.lora_dropout,
               lora_targets=sorted(lora.target_modules), trainable=sum(p.numel() for p in model.parameters()
                                                                        if p.requires_grad),
               dtype=str(next(model.parameters()).dtype), ref_model=trainer.ref_model is not None)
    return out


def step_timer():
    """A callback recording the wall and CPU time (all threads) at the start of training and at each optimizer
    step's end."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.marks = []

        def on_train_begin(self, args, state, control, **kwargs):
            self.marks = [(time.perf_counter(), time.process_time())]

        def on_step_end(self, args, state, control, **kwargs):
            self.marks.append((time.perf_counter(), time.process_time()))

        def steps(self) -> list[tuple[float, float]]:
            return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(self.marks, self.marks[1:])]

    return StepTimer()


def timed(trainer, train) -> list[tuple[float, float]]:
    """Each step's (wall, CPU) seconds, the first one first."""
    timer = step_timer()
    trainer.add_callback(timer)
    train()
    return timer.steps()


def lengths(trainer) -> float:
    return statistics.mean(r["completions/mean_length"] for r in trainer.state.log_history
                           if "completions/mean_length" in r)


def main() -> int:
    import torch

    from tunewise.data.prompts import load_prompts, trl_rows
    from tunewise.train.fit import fit

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=6, help="steps a round (at least 2: the first is set apart)")
    p.add_argument("--model", default="tunewise-tiny")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--markdown", help="append the result table to this file")
    a = p.parse_args()
    if a.steps < 2:
        p.error("--steps: at least 2 (the first step is set apart)")
    torch.set_num_threads(a.threads)
    rows = trl_rows(load_prompts(["additions"], seed=SEED))
    times = {"tunewise": [], "trl": []}  # the later steps of every round: wall seconds
    cpu = {"tunewise": [], "trl": []}  # and CPU seconds of all threads (less moved by other jobs on the machine)
    first = {"tunewise": [], "trl": []}
    gen = {"tunewise": [], "trl": []}
    compared = None
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            trainer, run, run_dir = tunewise_trainer(a.steps, Path(tmp) / f"tw{r}", a.model)
            steps = timed(trainer, lambda: fit(trainer, run, run_dir, None))
            first["tunewise"].append(steps[0][0])
            times["tunewise"] += [w for w, _ in steps[1:]]
            cpu["tunewise"] += [c for _, c in steps[1:]]
            gen["tunewise"].append(lengths(trainer))
            ours = settings(trainer)
            del trainer
            trainer = trl_trainer(a.steps, Path(tmp) / f"trl{r}", a.model, rows)
            steps = timed(trainer, trainer.train)
            first["trl"].append(steps[0][0])
            times["trl"] += [w for w, _ in steps[1:]]
            cpu["trl"] += [c for _, c in steps[1:]]
            gen["trl"].append(lengths(trainer))
            theirs = settings(trainer)
            del trainer
            if compared is None:
                differ = {k: (ours[k], theirs[k]) for k in ours if ours[k] != theirs[k]}
                if differ:
                    print(f"the two sides' settings differ: {differ}", file=sys.stderr)
                    return 1
                compared = ours
            later = {k: statistics.median(v[-(a.steps - 1):]) for k, v in times.items()}
            print(f"round {r + 1}: tunewise {later['tunewise']:.2f} s/step after a first of {first['tunewise'][-1]:.2f} "
                  f"(mean length {gen['tunewise'][-1]:.1f}), TRL {later['trl']:.2f} after {first['trl'][-1]:.2f} "
                  f"(mean length {gen['trl'][-1]:.1f})", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    ratio, ratio_cpu = med["tunewise"] / med["trl"], med_cpu["tunewise"] / med_cpu["trl"]
    shown = [arg for i, arg in enumerate(sys.argv[1:]) if arg != "--markdown" and sys.argv[i] != "--markdown"]
    command = "PYTHONPATH=src .venv/bin/python benchmarks/grpo_vs_trl.py " + " ".join(shown)
    table = "\n".join([
        f"`{command}` ({datetime.date.today()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPU cores, torch {a.threads} threads; {a.model}, {a.rounds} rounds x {a.steps} steps)",
        "",
        "| | s/step after the first, median (min-max) | CPU s/step, median | first step, median | mean completion "
        "tokens |",
        "|---|---|---|---|---|",
        *(f"| {name} | {med[k]:.2f} ({min(times[k]):.2f}-{max(times[k]):.2f}) | {med_cpu[k]:.2f} | "
          f"{statistics.median(first[k]):.2f} | {statistics.mean(gen[k]):.1f} |"
          for k, name in (("tunewise", "tunewise (`tunewise rlhf --rlhf_type grpo`, whole run)"),
                          ("trl", "TRL GRPOTrainer alone"))),
        "",
        f"ratio tunewise / TRL: **{ratio:.3f}** wall, {ratio_cpu:.3f} CPU (goal <= 1.1)",
    ])
    print(table)
    if a.markdown:
        with open(a.markdown, "a", encoding="utf-8") as f:
            f.write("\n" + table + "\n")
    return 0 if ratio <= 1.1 else 3


if __name__ == "__main__":
    sys.exit(main())
