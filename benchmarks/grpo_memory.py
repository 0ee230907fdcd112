#!/usr/bin/env python3
"""GRPO's memory plan against the peak a real CPU run reaches: `tunewise rlhf --rlhf_type grpo` run for a few steps
in a child process per setting, its peak resident memory (VmHWM, whole process and per phase: generation, then the
log-probabilities, loss and backward pass) against the estimate the plan of that same run printed.

    PYTHONPATH=src .venv/bin/python benchmarks/grpo_memory.py               # the embedded model, every setting
    PYTHONPATH=src .venv/bin/python benchmarks/grpo_memory.py --model 0.5B-4L --settings lora-g4-c64
    PYTHONPATH=src .venv/bin/python benchmarks/grpo_memory.py --fused_head    # TRL's output layer alone, on CPU

Completions are held to --max_completion_length (min_new_tokens, TRL's generation_kwargs): the plan budgets for the
longest completions a round can have, and a run whose completions stop early measures less than that budget.
glibc returns freed large blocks at once (MALLOC_MMAP_THRESHOLD_=65536), so resident memory follows live memory, as
tests/plan/test_memory.py does for sft.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name -> (train_type, num_generations, max_completion_length, per_device_train_batch_size, steps_per_generation, beta)
SETTINGS = {
    "lora-g4-c64": ("lora", 4, 64, 8, 1, 0.04),
    "lora-g8-c64": ("lora", 8, 64, 8, 1, 0.04),
    "lora-g4-c256": ("lora", 4, 256, 8, 1, 0.04),
    "lora-g8-c256": ("lora", 8, 256, 16, 1, 0.04),
    "full-g4-c64": ("full", 4, 64, 8, 1, 0.04),
    "full-g8-c256": ("full", 8, 256, 16, 1, 0.04),
    "full-g8-c256-beta0": ("full", 8, 256, 16, 1, 0.0),
    # generation's peak: a round of 256 completions (32 prompts x 8) generated at once, trained one at a time
    "lora-g8-c256-round256": ("lora", 8, 256, 1, 256, 0.04),
}

CHILD = r"""
import dataclasses, gc, json, sys
from tunewise.cli import main
from tunewise.recipes import grpo
from trl import GRPOTrainer

def status(key):  # VmRSS / VmHWM (the peak since the last reset) in bytes
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))

def reset():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the peak (VmHWM) back to the current RSS

marks = {"generation": 0, "rest": 0}
def note(key):  # the peak since the last reset, into marks[key]; then reset
    marks[key] = max(marks[key], status("VmHWM"))
    reset()

parts = grpo.RECIPE.models
def measured_parts(run):  # everything but the model, its training state and the steps is loaded by now
    gc.collect()
    reset()
    marks["before"] = status("VmRSS")
    marks["estimate"] = run.memory.as_dict()
    return parts(run)
complete = int(sys.argv[1])
fields = grpo.RECIPE.config_fields
grpo.RECIPE = dataclasses.replace(grpo.RECIPE, models=measured_parts, config_fields=lambda a: {
    **fields(a), "generation_kwargs": {"min_new_tokens": complete}})

generate = GRPOTrainer._generate_single_turn
def measured_generate(self, *a, **k):
    note("rest")
    out = generate(self, *a, **k)
    note("generation")
    return out
GRPOTrainer._generate_single_turn = measured_generate

assert main(["rlhf", "--rlhf_type", "grpo", *sys.argv[2:]]) == 0
note("rest")
marks["peak"] = max(marks["generation"], marks["rest"])
print("MEASURED " + json.dumps(marks))
"""


HEAD = r"""
import gc, sys, torch
from trl.kernels import ChunkedLogProbFunction

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))

def reset():
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return status("VmRSS")

n, vocab, hidden = (int(x) for x in sys.argv[1:4])
x = torch.randn(n, hidden, requires_grad=True)
weight = (torch.randn(vocab, hidden) * 0.02).requires_grad_(False)
targets = torch.randint(0, vocab, (n,))
for _ in range(2):  # the second pass: the first also pages in the kernels' code
    base = reset()
    logps, entropy, *_ = ChunkedLogProbFunction.apply(x, weight, None, targets, 0.9, 32768, None, 1.0,
                                                       ("log_probs", "entropy"))
    forward = status("VmHWM") - base
    loss = -(logps.sum() + 0.01 * entropy.sum())
    base = reset()
    loss.backward()
    backward = status("VmHWM") - base
    x.grad = None
    del loss, logps, entropy
tile = min(n, 4096) * min(vocab, 32768) * 4
print(f"| {n} | {vocab} | {tile / 2**20:.1f} | {forward / tile:.2f} | {backward / tile:.2f} |")
"""


def fused_head(shapes=((744, 6144, 256), (2000, 6144, 256), (8000, 6144, 256), (1000, 151936, 896))) -> None:
    """TRL's fused output layer alone on CPU (its torch fallback): peak memory of its forward and backward passes in
    float32 tiles (min(positions, 4,096) x min(vocabulary, 32,768) floats), the figures grpo_memory.py plans with."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536"}
    print("| positions | vocabulary | tile MiB | forward peak (tiles) | backward peak (tiles) |\n|---|---|---|---|---|")
    for shape in shapes:
        proc = subprocess.run([sys.executable, "-c", HEAD, *map(str, shape)], capture_output=True, text=True, env=env,
                              check=True)
        print(proc.stdout.strip(), flush=True)


def flags(setting: str, model: str, out: Path, steps: int = 2) -> list[str]:
    train_type, generations, completion, batch, per_generation, beta = SETTINGS[setting]
    return ["--model", model, "--dataset", "additions#512", "--reward_funcs", "accuracy", "--train_type", train_type,
            "--num_generations", str(generations), "--max_completion_length", str(completion),
            "--per_device_train_batch_size", str(batch), "--steps_per_generation", str(per_generation),
            "--gradient_accumulation_steps", "1", "--beta", str(beta), "--max_steps", str(steps),
            "--save_steps", "1000", "--logging_steps", "1", "--report_to", "none", "--torch_dtype", "float32",
            "--model_name", "N", "--model_author", "A", "--output_dir", str(out), "--add_version", "false"]


def measure(setting: str, model: str = "tunewise-tiny", steps: int = 2, timeout: int = 1800) -> dict:
    """Run one setting in a child process: {"before", "peak", "generation", "rest", "estimate"} (bytes; estimate:
    the plan's GrpoMemory.as_dict())."""
    completion = SETTINGS[setting][2]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536", "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT / "src")}
    with tempfile.TemporaryDirectory() as tmp:
        argv = flags(setting, model, Path(tmp) / "run", steps)
        proc = subprocess.run([sys.executable, "-c", CHILD, str(completion), *argv], capture_output=True, text=True,
                              env=env, timeout=timeout)
    if proc.returncode != 0 or "MEASURED " not in proc.stdout:
        raise RuntimeError(f"{setting}: exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.split("MEASURED ", 1)[1])


def row(setting: str, marks: dict) -> dict:
    est = marks["estimate"]
    phases = {name: sum(parts.values()) for name, parts in est["phases"].items()}
    held = sum(est["parts"].values())
    return {"setting": setting, "estimate": est["total"], "measured": marks["peak"],
            "ratio": est["total"] / marks["peak"], "peak_phase": est["peak_phase"],
            "generation_estimate": held + phases["generation"], "generation_measured": marks["generation"],
            "loss_estimate": held + phases["loss"], "loss_measured": marks["rest"],
            "prompt_length": est["settings"]["prompt_length"], "before": marks["before"],
            # what the run adds to the process: the estimate without its process part, the peak above the RSS at
            # the model's load
            "added_estimate": est["total"] - est["parts"].get("process", 0),
            "added_measured": marks["peak"] - marks["before"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tunewise-tiny", help="tunewise-tiny, or a benchmarks/qwen_shape.py fixture "
                                                           "(0.5B-4L, 0.5B ...), built and cached on first use")
    p.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated, of: {', '.join(SETTINGS)}")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--out", help="write the rows as JSON here")
    p.add_argument("--fused_head", action="store_true", help="measure TRL's fused output layer alone instead")
    a = p.parse_args()
    if a.fused_head:
        fused_head()
        return 0
    model = a.model
    if model != "tunewise-tiny":
        sys.path.insert(0, str(ROOT / "benchmarks"))
        import qwen_shape

        model = str(qwen_shape.build_model(model, qwen_shape.cache_root()))
    rows = []
    print("| setting | prompt tokens | estimate GiB | measured peak RSS GiB | estimate / measured | peak phase "
          "(planned) | generation: estimate / measured GiB | loss: estimate / measured GiB | added to the process: "
          "estimate / measured MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for setting in a.settings.split(","):
        r = row(setting, measure(setting, model, a.steps))
        rows.append(r)
        g = 2 ** 30
        print(f"| {setting} | {r['prompt_length']} | {r['estimate'] / g:.3f} | {r['measured'] / g:.3f} | "
              f"{r['ratio']:.2f} | {r['peak_phase']} | {r['generation_estimate'] / g:.3f} / "
              f"{r['generation_measured'] / g:.3f} | {r['loss_estimate'] / g:.3f} / {r['loss_measured'] / g:.3f} | "
              f"{r['added_estimate'] / 2 ** 20:.0f} / {r['added_measured'] / 2 ** 20:.0f} |", flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
