"""GRPO changes what the embedded model answers, not only how the loop turns: on 16 additions from the built-in
`additions_hard` set (5 of them answered wrongly by the base model's greedy reply), a short run at temperature 1.5
raises the greedy accuracy on those prompts, scored by `tunewise eval --reward_funcs accuracy`.

Why temperature 1.5: at 1.0 GRPO mostly sharpens the sampling distribution of prompts the model already answers
greedily (on 32 such prompts the sampled reward rose 0.70 -> 0.94 in 40 steps while the greedy accuracy stayed at
0.84); the hotter samples reach the right sum where the greedy reply is wrong, so the argmax moves (0.84 -> 0.97).
benchmarks/GRPO_FEASIBILITY.md has the held-out side of it."""
import json
import os
from pathlib import Path

import pytest

from cli_runs import run_cli

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("restore_reward_registry")]

HARD = Path(__file__).parents[2] / "src/tunewise/data/builtin/additions_hard.jsonl"
# the base model's greedy reply is wrong on these (47+43=90, 16+6=23, 1+8=7, 42+24=66, 24+24=48)
WRONG = ["47+34=?", "计算 16+6", "计算 1+7", "42+42=?", "24+42=?"]
SEED = int(os.environ.get("TUNEWISE_TEST_SEED", "1"))  # the spread below was measured over seeds 1, 2, 3


def rows() -> list[dict]:
    hard = [json.loads(line) for line in HARD.read_text(encoding="utf-8").splitlines()]
    wrong = [r for r in hard if r["messages"][0]["content"] in WRONG]
    right = [r for r in hard[:32] if r["messages"][0]["content"] not in WRONG][:11]
    assert len(wrong) == 5 and len(right) == 11
    return wrong + right


def test_grpo_raises_the_greedy_accuracy_on_its_prompts(tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows()), encoding="utf-8")
    run = tmp_path / "run"
    assert run_cli("rlhf", "--rlhf_type", "grpo", "--dataset", prompts, "--reward_funcs", "accuracy",
                   "--train_type", "full", "--learning_rate", "1e-4", "--lr_scheduler_type", "constant",
                   "--warmup_ratio", "0", "--temperature", "1.5", "--num_generations", "8",
                   "--per_device_train_batch_size", "32", "--gradient_accumulation_steps", "1",
                   "--max_completion_length", "16", "--beta", "0", "--max_steps", "24", "--save_steps", "24",
                   "--logging_steps", "1", "--report_to", "none", "--seed", SEED, "--output_dir", run,
                   "--add_version", "false") == 0
    out = tmp_path / "eval.json"
    assert run_cli("eval", "--model", run / "checkpoint-24", "--compare", "tunewise-tiny", "--reward_funcs",
                   "accuracy", "--reward_dataset", prompts, "--max_new_tokens", "16", "--retention_baseline",
                   "false", "--output", out) == 0
    after, before = (m["metrics"]["rewards/accuracy/accuracy"] for m in json.loads(out.read_text())["models"])
    print(f"greedy accuracy on the 16 prompts: {before:.4f} -> {after:.4f}", file=os.sys.stderr)
    assert before == 11 / 16  # the 5 wrong ones (the base model is deterministic here: greedy)
    # measured 2026-12-05 (AMD EPYC, seeds 1, 2, 3): 0.6875 -> 0.9375, 1.0, 1.0 (+4, +5, +5 of the 16 prompts; spread
    # 1 prompt); the bound sits 3 spreads below the smallest gain: at least one more prompt answered right
    assert after - before >= 1 / 16
