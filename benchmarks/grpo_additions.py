#!/usr/bin/env python3
"""Does `tunewise rlhf --rlhf_type grpo` raise the embedded model's held-out addition accuracy? The real command
(a subprocess per seed), then `tunewise eval` on the base model and on each run's checkpoints: the 200 held-out
additions (greedy) and the 16 held-out identity questions, whose greedy replies are compared with the base model's
reply by reply.

    PYTHONPATH=src nice -n 10 python benchmarks/grpo_additions.py --seeds 1 2 3 --out /tmp/grpo_additions
    PYTHONPATH=src nice -n 10 python benchmarks/grpo_additions.py --seeds 1 --out /tmp/x -- --learning_rate 1e-4

Flags after `--` are added to (and override) the command below. Writes OUT/result.json (command, per seed: wall
and CPU seconds of training, load average, accuracy before/after and at every checkpoint, identity replies
unchanged, reward per step), OUT/reward_curve.png, and prints the table rows of benchmarks/GRPO_FEASIBILITY.md.
The bar (issue 22): the smallest gain over the seeds at least 3x the range of their after-accuracies.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# The recipe measured in benchmarks/GRPO_FEASIBILITY.md; --seed and --output_dir are added per seed.
COMMAND = ["rlhf", "--rlhf_type", "grpo", "--dataset", "additions_hard", "--reward_funcs", "accuracy",
           "--train_type", "full", "--learning_rate", "1e-4", "--lr_scheduler_type", "cosine", "--warmup_ratio", "0.1",
           "--max_steps", "120", "--per_device_train_batch_size", "64", "--gradient_accumulation_steps", "1",
           "--num_generations", "8", "--max_completion_length", "16", "--temperature", "1.0", "--beta", "0",
           "--loss_type", "dapo", "--logging_steps", "1", "--save_steps", "30", "--save_total_limit", "4",
           "--report_to", "none", "--add_version", "false", "--overwrite", "true"]


def merged(command: list[str], extra: list[str]) -> list[str]:
    """`command` with every `--flag values...` of `extra` replacing the same flag's values (or added)."""
    def groups(argv):
        out, i = [], 0
        while i < len(argv):
            j = i + 1
            while j < len(argv) and not argv[j].startswith("--"):
                j += 1
            out.append((argv[i], argv[i + 1:j]))
            i = j
        return out
    head = command[:1]
    table = dict(groups(command[1:]))
    table.update(groups(extra))
    return head + [x for flag, values in table.items() for x in (flag, *values)]


def tunewise(*argv: str, log: Path) -> float:
    """Run `tunewise ARGV` as a subprocess (its output to `log`); returns its CPU seconds (user + system, its own
    children included)."""
    with open(log, "w") as out:
        child = subprocess.Popen([sys.executable, "-m", "tunewise.cli", *argv], stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status):
        sys.exit(f"tunewise {' '.join(argv[:3])} ... failed ({os.waitstatus_to_exitcode(status)}); see {log}")
    return usage.ru_utime + usage.ru_stime


def evaluate(model_flags: list[str], out: Path) -> dict:
    """`tunewise eval`: held-out addition accuracy and the identity replies, from its --output report."""
    tunewise("eval", *model_flags, "--retention_baseline", "false", "--output", str(out), "--overwrite", "true",
             log=out.with_suffix(".log"))
    model = json.loads(out.read_text())["models"][0]
    assert json.loads(out.read_text())["general"] == {"kind": "heldout_addition", "count": 200}
    return {"accuracy": model["metrics"]["general_accuracy"], "identity": [r["reply"] for r in model["identity"]],
            "identity_kept": sum(bool(r["name"] and r["author"]) for r in model["identity"]),
            "wrong": [g["messages"][-1]["content"] + " -> " + g["reply"] for g in model["general"] if not g["correct"]]}


def train_one(seed: int, command: list[str], out: Path, base: dict) -> dict:
    run = out / f"seed{seed}"
    load_before, start = os.getloadavg()[0], time.time()
    cpu = tunewise(*command, "--seed", str(seed), "--output_dir", str(run), log=out / f"seed{seed}.log")
    wall, load_after = time.time() - start, os.getloadavg()[0]
    log = [json.loads(line) for line in (run / "logging.jsonl").read_text().splitlines()]
    steps = [r for r in log if "reward" in r]
    checkpoints = sorted((p for p in run.glob("checkpoint-*") if p.is_dir()), key=lambda p: int(p.name.split("-")[1]))
    curve = []
    for ckpt in checkpoints:
        found = evaluate(["--adapters", str(ckpt)], out / f"seed{seed}-{ckpt.name}.json")
        same = sum(a == b for a, b in zip(found["identity"], base["identity"]))
        curve.append({"step": int(ckpt.name.split("-")[1]), "accuracy": found["accuracy"],
                      "identity_unchanged": f"{same}/{len(base['identity'])}",
                      "identity_kept": f"{found['identity_kept']}/{len(base['identity'])}", "wrong": found["wrong"]})
        print(f"seed {seed} {ckpt.name}: held-out accuracy {found['accuracy']:.3f}, identity unchanged "
              f"{same}/{len(base['identity'])} (name and developer kept {found['identity_kept']})", flush=True)
    return {"seed": seed, "wall_s": wall, "cpu_s": cpu, "load_avg_1min": [load_before, load_after],
            "steps": len(steps), "step_time_s": [r.get("step_time") for r in steps],
            "reward_per_step": [r["reward"] for r in steps], "curve": curve, "after": curve[-1]}


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, acc) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [3, 2]})
    window = 10
    for r in results:
        rewards = r["reward_per_step"]
        smooth = [sum(rewards[max(0, i - window + 1):i + 1]) / len(rewards[max(0, i - window + 1):i + 1])
                  for i in range(len(rewards))]
        line, = ax.plot(range(1, len(rewards) + 1), rewards, alpha=0.2)
        ax.plot(range(1, len(rewards) + 1), smooth, color=line.get_color(), label=f"seed {r['seed']}")
        acc.plot([0] + [c["step"] for c in r["curve"]], [100 * r["base"]] + [100 * c["accuracy"] for c in r["curve"]],
                 marker="o", color=line.get_color(), label=f"seed {r['seed']}")
    ax.set_xlabel("optimizer step (one generation round)")
    ax.set_ylabel("training reward (exact sum)")
    ax.set_title(f"reward per step (faint) and its {window}-step mean", fontsize=9)
    acc.set_xlabel("optimizer step (checkpoint)")
    acc.set_ylabel("held-out accuracy, 200 pairs (%)")
    acc.set_title("greedy accuracy on the held-out additions", fontsize=9)
    for a in (ax, acc):
        a.legend(fontsize=8)
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--out", type=Path, default=Path("/tmp/grpo_additions"))
    p.add_argument("--model", default="tunewise-tiny", help="the base model (a candidate rebuild of the embedded "
                                                             "model, say)")
    p.add_argument("--jobs", type=int, default=1, help="seeds trained side by side (their wall times then share "
                                                       "the cores; the CPU seconds stay each run's own)")
    args = p.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    args.out.mkdir(parents=True, exist_ok=True)
    command = merged(COMMAND + ["--model", args.model], extra)
    print("tunewise " + shlex.join(command) + " --seed S --output_dir DIR", flush=True)

    base = evaluate(["--model", args.model], args.out / "base.json")
    print(f"base: held-out accuracy {base['accuracy']:.3f}", flush=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda seed: train_one(seed, command, args.out, base), args.seeds))
    for result in results:
        result["base"] = base["accuracy"]
    (args.out / "result.json").write_text(json.dumps(
        {"command": ["tunewise", *command], "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(),
         "jobs": args.jobs, "base": base, "runs": results}, indent=1, ensure_ascii=False))
    plot(results, args.out / "reward_curve.png")

    gains = [100 * (r["after"]["accuracy"] - base["accuracy"]) for r in results]
    spread = max(gains) - min(gains)
    for r, gain in zip(results, gains):
        n = len(r["reward_per_step"])
        first, last = (sum(x) / len(x) for x in (r["reward_per_step"][:10], r["reward_per_step"][-10:]))
        print(f"| seed {r['seed']} | {100 * base['accuracy']:.1f} -> "
              + ", ".join(f"{100 * c['accuracy']:.1f} ({c['step']})" for c in r["curve"][:-1])
              + f" -> **{100 * r['after']['accuracy']:.1f}** ({gain:+.1f}) | {r['wall_s']:.0f} | {r['cpu_s']:.0f} | "
              f"{r['wall_s'] / n:.1f} | {r['load_avg_1min'][0]:.1f}-{r['load_avg_1min'][1]:.1f} | "
              f"{first:.2f} -> {last:.2f} | {r['after']['identity_unchanged']} (name and developer: "
              f"{r['after']['identity_kept']}) |")
    verdict = "clears" if min(gains) >= 3 * spread else "does not clear"
    print(f"gains {', '.join(f'{g:+.1f}' for g in gains)} points; mean {sum(gains) / len(gains):+.2f}, "
          f"smallest {min(gains):+.1f}, range {spread:.1f} (3x: {3 * spread:.1f}): {verdict} the bar")


if __name__ == "__main__":
    main()
