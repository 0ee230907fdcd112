"""GRPO on 2 CPU processes (torchrun, gloo) equals one process with gradient accumulation 2: one generation round of
16 completions (4 prompts x 4) per optimizer step, dealt to the processes or to the micro-batches.

Generation samples, and two processes draw other random numbers than one, so the runs are made to sample alike:
* through the CLI (`--nproc_per_node 2`), --top_k 1 makes every draw the likeliest token. The two runs then complete
  and score every prompt alike, with the same advantages; but a prompt's completions are then alike too, so their
  advantages (which sum to 0 in a group) cancel in the gradient: there is no update to compare.
* grpo_seeded_run.py builds the run as the CLI does and samples each completion from the policy at the run's
  temperature with a generator of its own (seeded by prompt, place in the group and step; TRL's rollout_func hook):
  distinct completions (at temperature 2: the embedded model is sure of its additions), the same in both runs. There
  the gradient norms, losses and weights are compared.
With --loss_type grpo and dapo the objective is a sum over the round's completions (dapo divides by the round's
tokens), so splitting the round over micro-batches or processes must not change it (bnpo's token mean of each
micro-batch would).

Measured (2026-12-05, 2 shared CPU cores, 3 steps, LoRA r 8, lr 1e-4, seeded sampling at temperature 2): gradient
norms within 3.4e-6 relative at every step (grpo 0.5156001 / 0.5156002, 1.3544176 / 1.3544174, 0.3829735 /
0.3829733; dapo 0.5156001 / 0.5156002, 1.3181269 / 1.3181268, 0.3920835 / 0.3920848), losses within 5e-8 (dapo's
step 2: 0.01149236 / 0.01149236; the others are float noise around 0: on policy GRPO's loss is the advantages' mean
plus beta x KL), LoRA weights within 1.9e-7 (grpo) and 2.5e-7 (dapo) of each other, the largest weight 0.0625.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

import tunewise

pytestmark = pytest.mark.slow  # pairs of GRPO runs of 3 steps, one of each on 2 processes

STEPS = 3
DIGITS = """from tunewise.rewards import register


@register("digits")
def digits(prompts, completions, **kwargs):
    # the share of digits: differs between a prompt's distinct completions, where accuracy is mostly 1 for all
    texts = [c[-1]["content"] for c in completions]
    return [sum(ch.isdigit() for ch in t) / max(len(t), 1) for t in texts]
"""
COMMON = ["--dataset", "additions#32", "--num_generations", "4",
          "--max_completion_length", "8", "--per_device_train_batch_size", "8", "--max_steps", str(STEPS),
          "--logging_steps", "1", "--save_steps", str(STEPS), "--learning_rate", "1e-4", "--lora_dropout", "0"]
ONE, TWO = ["--gradient_accumulation_steps", "2"], ["--gradient_accumulation_steps", "1"]


def env():
    return {**os.environ, "PYTHONPATH": str(Path(tunewise.__file__).parents[1])}


def finish(cmd) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1500, env=env())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def read(out: Path) -> tuple[list, list]:
    log = [json.loads(line) for line in (out / "logging.jsonl").read_text().splitlines()]
    completions = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    return [r for r in log if "loss" in r], completions


def assert_same_rounds(comp1, comp2):
    """The same 16 completions per step, in the same order, with the same rewards and advantages."""
    key = lambda c: (c["step"], json.dumps(c["prompt"]), json.dumps(c["completion"]))
    assert [key(c) for c in comp1] == [key(c) for c in comp2] and len(comp1) == 16 * STEPS
    for c1, c2 in zip(comp1, comp2):
        assert c1["rewards"] == c2["rewards"] and c1["advantage"] == pytest.approx(c2["advantage"], abs=1e-5)


def test_through_the_cli_both_runs_complete_and_score_alike(tmp_path):
    def cli(out, *extra):
        finish([sys.executable, "-m", "tunewise.cli", "rlhf", "--rlhf_type", "grpo", *COMMON, "--top_k", "1",
                "--reward_funcs", "accuracy", "format", "--reward_weights", "1", "0.5", "--report_to", "none",
                "--log_completions", "true",
                "--output_dir", str(out), "--add_version", "false", *extra])
        return read(out)

    (log1, comp1), (log2, comp2) = cli(tmp_path / "one", *ONE), cli(tmp_path / "two", *TWO, "--nproc_per_node", "2",
                                                                     "--master_port", "29681")
    assert_same_rounds(comp1, comp2)
    assert len({json.dumps(c["completion"]) for c in comp1[:4]}) == 1  # top_k 1: a group's completions are alike
    assert [r["step"] for r in log1] == [r["step"] for r in log2] == list(range(1, STEPS + 1))
    for r1, r2 in zip(log1, log2):
        for key in ("rewards/accuracy/mean", "completions/mean_length", "completions/clipped_ratio", "reward"):
            assert r1[key] == r2[key], key


@pytest.mark.parametrize("loss_type, port", [("grpo", "29682"), ("dapo", "29683")])
def test_the_update_on_two_processes_equals_one_process(loss_type, port, tmp_path):
    script = Path(__file__).with_name("grpo_seeded_run.py")
    plugin = tmp_path / "digits.py"
    plugin.write_text(DIGITS, encoding="utf-8")
    flags = [*COMMON, "--external_plugins", str(plugin), "--reward_funcs", "accuracy", "digits", "--loss_type",
             loss_type, "--temperature", "2.0"]
    finish([sys.executable, str(script), str(tmp_path / "one"), *flags, *ONE])
    finish([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
            str(script), str(tmp_path / "two"), *flags, *TWO])
    (log1, comp1), (log2, comp2) = read(tmp_path / "one"), read(tmp_path / "two")
    assert_same_rounds(comp1, comp2)
    assert len({json.dumps(c["completion"]) for c in comp1}) > 16  # distinct completions within groups
    assert all(any(c["advantage"] != 0 for c in comp1 if c["step"] == step) for step in range(1, STEPS + 1))
    w1, w2 = load_file(tmp_path / "one" / "adapter.safetensors"), load_file(tmp_path / "two" / "adapter.safetensors")
    diff = max((w1[k] - w2[k]).abs().max().item() for k in w1)
    print({"loss": [(r1["loss"], r2["loss"]) for r1, r2 in zip(log1, log2)],
           "grad_norm": [(r1["grad_norm"], r2["grad_norm"]) for r1, r2 in zip(log1, log2)],
           "max weight diff": diff, "max weight": max(w1[k].abs().max().item() for k in w1)})
    assert [r["step"] for r in log1] == [r["step"] for r in log2] == list(range(1, STEPS + 1))
    assert log1[0]["grad_norm"] > 0
    for r1, r2 in zip(log1, log2):  # bounds 30x and more above the measured differences (module docstring)
        assert r1["loss"] == pytest.approx(r2["loss"], rel=1e-4, abs=1e-6)
        assert r1["grad_norm"] == pytest.approx(r2["grad_norm"], rel=1e-4)
    assert w1.keys() == w2.keys() and diff < 1e-5
