"""ms-swift's example commands run as tunewise commands: the scripts below are ms-swift's own (modelscope/ms-swift at
3602360, 2026-08-22), run by bash with `swift` read as `tunewise`, and changed only where the test must: --model (the
embedded model), --dataset (built-in or tiny data) and an appended --max_steps. README "ms-swift's example commands"
lists them.

  examples/train/grpo/internal/transformers.sh  GRPO, LoRA, rewards accuracy and format, the system prompt read from
                                                 examples/train/grpo/prompt.txt, --log_completions: runs
  examples/train/rlhf/kto.sh                    KTO, LoRA, DeepSpeed ZeRO-2 on 2 processes (NPROC_PER_NODE=2),
                                                 --per_device_train_batch_size 1 x --gradient_accumulation_steps 8:
                                                 runs as 2 x 4, the same 16-row global batch, since TRL's KTOTrainer
                                                 (which tunewise runs) takes the KL term's mismatched replies from the
                                                 other rows of a per-device batch; the plan says so

The other GRPO examples of ms-swift generate with vLLM or LMDeploy (--use_vllm, --vllm_mode, ...).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import tunewise

# examples/train/grpo/prompt.txt, as ms-swift ships it (the GRPO example's --system)
R1_PROMPT = ("A conversation between User and Assistant. The user asks a question, and the Assistant solves it. The "
             "assistant first thinks about the reasoning process in the mind and then provides the user with the "
             "answer. The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> "
             "tags, respectively, i.e., <think> reasoning process here </think><answer> answer here </answer>")

GRPO_TRANSFORMERS = r"""# pip install math_verify # reward function
# pip install -U trl
# GPU memory: 80GiB
# You can set `--reward_model` to use a reward model to provide rewards.
# TransformersEngine to rollout

CUDA_VISIBLE_DEVICES=0 \
swift rlhf \
    --rlhf_type grpo \
    --model tunewise-tiny \
    --reward_funcs accuracy format \
    --tuner_type lora \
    --lora_rank 8 \
    --lora_alpha 32 \
    --target_modules all-linear \
    --torch_dtype bfloat16 \
    --dataset 'additions#16' \
    --load_from_cache_file true \
    --max_completion_length 1024 \
    --num_train_epochs 1 \
    --per_device_train_batch_size 4 \
    --per_device_eval_batch_size 4 \
    --learning_rate 1e-5 \
    --gradient_accumulation_steps 1 \
    --eval_steps 100 \
    --save_steps 100 \
    --save_total_limit 2 \
    --logging_steps 5 \
    --max_length 2048 \
    --output_dir output \
    --warmup_ratio 0.05 \
    --dataloader_num_workers 4 \
    --dataset_num_proc 4 \
    --num_generations 4 \
    --temperature 0.9 \
    --system 'examples/train/grpo/prompt.txt' \
    --log_completions true \
    --max_steps 2
"""

KTO = r"""nproc_per_node=2

CUDA_VISIBLE_DEVICES=0,1 \
NPROC_PER_NODE=$nproc_per_node \
swift rlhf \
    --rlhf_type kto \
    --model tunewise-tiny \
    --tuner_type lora \
    --dataset 'kto.jsonl' \
    --load_from_cache_file true \
    --split_dataset_ratio 0.01 \
    --num_train_epochs 1 \
    --per_device_train_batch_size 1 \
    --per_device_eval_batch_size 1 \
    --learning_rate 1e-4 \
    --lora_rank 8 \
    --lora_alpha 32 \
    --target_modules all-linear \
    --gradient_accumulation_steps $(expr 16 / $nproc_per_node) \
    --eval_steps 100 \
    --save_steps 100 \
    --save_total_limit 2 \
    --logging_steps 5 \
    --max_length 2048 \
    --output_dir output \
    --warmup_ratio 0.05 \
    --dataloader_num_workers 4 \
    --deepspeed zero2 \
    --dataset_num_proc 4 \
    --max_steps 2
"""


def run_script(script: str, cwd: Path) -> subprocess.CompletedProcess:
    """bash runs the script in `cwd`, `swift` being this tunewise (its package first on the path)."""
    bin_dir = cwd / "bin"
    bin_dir.mkdir(exist_ok=True)
    swift = bin_dir / "swift"
    swift.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m tunewise.cli "$@"\n')
    swift.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(Path(tunewise.__file__).parents[1])}
    return subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)


@pytest.mark.slow  # two GRPO steps of up to 1,024 tokens a completion
def test_ms_swifts_grpo_example_runs(tmp_path):
    (tmp_path / "examples/train/grpo").mkdir(parents=True)
    (tmp_path / "examples/train/grpo/prompt.txt").write_text(R1_PROMPT + "\n", encoding="utf-8")
    done = run_script(GRPO_TRANSFORMERS, tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run,) = (tmp_path / "output").iterdir()
    saved = json.loads((run / "args.json").read_text())["args"]
    assert saved["system"] == R1_PROMPT and saved["torch_dtype"] == "bfloat16" and saved["num_generations"] == 4
    log = [json.loads(line) for line in (run / "logging.jsonl").read_text().splitlines()]
    first = next(r for r in log if "loss" in r)
    assert {"rewards/accuracy/mean", "rewards/format/mean", "completions/mean_length", "kl"} <= set(first)
    completions = [json.loads(line) for line in (run / "completions.jsonl").read_text().splitlines()]
    assert len(completions) == 8 and completions[0]["prompt"][0] == {"role": "system", "content": R1_PROMPT}
    assert (run / "rewards.png").is_file() and (run / "last").resolve().name == "checkpoint-2"
    plan = json.loads((run / "plan.json").read_text())
    assert any("--dataset_num_proc and --load_from_cache_file" in note for note in plan["extra"]["notes"])


@pytest.mark.slow  # two DeepSpeed ZeRO-2 processes (gloo on the CPU) start, each with a policy and its reference
def test_ms_swifts_kto_example_runs_its_batch_of_1_as_2_with_half_the_accumulation(tmp_path):
    lines = [{"messages": [{"role": "user", "content": f"{i}+3=?"},
                           {"role": "assistant", "content": f"{i + 3}." if i % 2 else f"It might be {i + 2}, maybe."}],
              "label": bool(i % 2)} for i in range(33)]  # --split_dataset_ratio 0.01 holds 1 out: 2 steps of 16 rows
    (tmp_path / "kto.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    done = run_script(KTO, tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    note = ("note: KTO estimates its KL term from the other rows of a per-device batch; --per_device_train_batch_size "
            "1 x --gradient_accumulation_steps 8 runs as 2 x 4 (the same 16-row global batch, 8 rows a process).")
    assert note in done.stdout
    (run,) = (tmp_path / "output").iterdir()
    plan = json.loads((run / "plan.json").read_text())
    assert note in plan["extra"]["notes"] and plan["extra"]["engine"].startswith("DeepSpeed ZeRO-2")
    steps = plan["steps"]
    assert (steps["world_size"], steps["per_device_train_batch_size"], steps["gradient_accumulation_steps"],
            steps["global_batch_size"], steps["num_samples"], steps["total_steps"]) == (2, 2, 4, 16, 32, 2)
    assert plan["trainer_kwargs"]["per_device_train_batch_size"] == 2  # what the trainer was given
    record = json.loads((run / "args.json").read_text())
    assert (record["args"]["per_device_train_batch_size"], record["args"]["gradient_accumulation_steps"]) == (2, 4)
    assert record["sources"]["per_device_train_batch_size"] == "flag 1, regrouped for KTO's KL term"
    assert record["sources"]["gradient_accumulation_steps"] == "flag 8, regrouped for KTO's KL term"
    assert record["sources"]["world_size"] == "env NPROC_PER_NODE"
    log = [json.loads(line) for line in (run / "logging.jsonl").read_text().splitlines()]
    (first,) = [r for r in log if "loss" in r]  # --logging_steps 5: the first step, then the end-of-run summary
    assert first["step"] == 1 and first["lr"] == first["planned_lr"] == 0.0  # warm-up: 1 step of 2
    assert first["epoch"] == 0.5  # 16 of the 32 training rows
    assert {"kl", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected"} \
        <= set(first)
    assert any("eval_kl" in r for r in log) and log[-1]["step"] == 2 and "train_loss" in log[-1]
    assert (run / "last").resolve().name == "checkpoint-2"


def test_a_system_file_that_cannot_be_read_is_named(tmp_path, capsys):
    from cli_runs import run_cli

    assert run_cli("rlhf", "--rlhf_type", "grpo", "--dataset", "additions", "--reward_funcs", "accuracy",
                   "--system", tmp_path / "missing.txt", "--output_dir", tmp_path / "o") == 2
    assert f"--system {tmp_path / 'missing.txt'}: a value ending in .txt is read as a file" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
