"""Out of memory mid-run: a real `tunewise sft` of the embedded model, in a process of its own, made to run out of
memory at a chosen moment by the product's test hook TUNEWISE_TEST_OOM (tunewise/train/oom.py: it raises CUDA's
torch.OutOfMemoryError, or makes a real 1 EiB request to PyTorch's CPU allocator or to Python, which fails at once).
Checked: exit code 2 and one paragraph without a traceback, naming the moment, the plan's memory estimate (the
number the plan printed) against the memory in use, the flags that reduce memory, and the newest checkpoint, which
is whole, kept, and resumed from with --resume_from_checkpoint latest."""
import json
import os
import re
import subprocess
import sys

import pytest

from cli_runs import IDENTITY, read_log

pytestmark = pytest.mark.slow

FLAGS = ["--dataset", "self_cognition#8", *IDENTITY, "--max_steps", "6", "--save_steps", "2", "--logging_steps", "1",
         "--report_to", "none", "--add_version", "false"]


def sft(run_dir, *extra, oom: str | None = None) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "TUNEWISE_TEST_OOM"}
    if oom:
        env["TUNEWISE_TEST_OOM"] = oom
    return subprocess.run([sys.executable, "-m", "tunewise.cli", "sft", *FLAGS, "--output_dir", str(run_dir), *extra],
                          capture_output=True, text=True, env=env, timeout=600)


def planned_estimate(stdout: str) -> str:
    """The total the plan printed before training ("memory estimate: 0.71 GiB per device ...")."""
    found = re.search(r"memory estimate: (\S+ \S+) per device", stdout)
    assert found, stdout
    return found.group(1)


def checked_error(done: subprocess.CompletedProcess, at: str) -> str:
    assert done.returncode == 2, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("tunewise sft: error:")]
    assert len(errors) == 1, done.stderr[-3000:]
    message = errors[0]
    assert f"out of memory {at}" in message, message
    assert f"The plan estimated {planned_estimate(done.stdout)} per device" in message, message
    assert re.search(r"the process held \d+\.\d+ [GM]iB resident \(peak \d+\.\d+ [GM]iB\), of the machine's", message)
    for flag in ("--per_device_train_batch_size (now 1;", "--gradient_accumulation_steps, now 1,",
                 "--max_length (now 2048)", "--gradient_checkpointing true", "--deepspeed zero3_offload"):
        assert flag in message, (flag, message)
    return message


def whole_checkpoint(path, step: int) -> None:
    from safetensors.torch import load_file

    state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    assert state["global_step"] == step
    assert load_file(path / "adapter_model.safetensors"), path  # readable, not empty
    assert (path / "optimizer.pt").is_file() and (path / "tokenizer_config.json").is_file()


def resumed_to_the_end(run_dir, *changes) -> None:
    again = sft(run_dir, "--resume_from_checkpoint", "latest", *changes)
    assert again.returncode == 0, again.stderr[-3000:]
    steps = [r["step"] for r in read_log(run_dir) if "loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6], steps  # the log cut back to the checkpoint, then continued
    assert (run_dir / "last").resolve().name == "checkpoint-6"


def test_out_of_memory_in_a_training_step_is_one_error_and_the_run_resumes(tmp_path):
    run_dir = tmp_path / "run"
    done = sft(run_dir, oom="step:5")
    message = checked_error(done, "in training step 5 (4 steps done)")
    assert "CUDA out of memory" in message and f"checkpoint is kept: {run_dir / 'checkpoint-4'};" in message
    assert "--resume_from_checkpoint latest" in message
    whole_checkpoint(run_dir / "checkpoint-4", 4)
    assert sorted(p.name for p in run_dir.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    resumed_to_the_end(run_dir, "--gradient_checkpointing", "true")  # one of the advised changes, on the way


@pytest.mark.parametrize("kind, names", [("cpu", "DefaultCPUAllocator: can't allocate memory"),
                                         ("python", "MemoryError")])
def test_a_cpu_allocation_that_fails_is_the_same_error(tmp_path, kind, names):
    run_dir = tmp_path / "run"
    message = checked_error(sft(run_dir, oom=f"step:3:{kind}"), "in training step 3 (2 steps done)")
    assert names in message and f"checkpoint is kept: {run_dir / 'checkpoint-2'};" in message
    whole_checkpoint(run_dir / "checkpoint-2", 2)


def test_out_of_memory_while_saving_keeps_the_checkpoint_before(tmp_path):
    run_dir = tmp_path / "run"
    message = checked_error(sft(run_dir, oom="save:4"), "while saving the checkpoint of step 4 (it was not published)")
    assert f"checkpoint is kept: {run_dir / 'checkpoint-2'};" in message
    assert sorted(p.name for p in run_dir.glob("checkpoint-*")) == ["checkpoint-2"]
    whole_checkpoint(run_dir / "checkpoint-2", 2)
    resumed_to_the_end(run_dir)


def test_out_of_memory_while_evaluating(tmp_path):
    run_dir = tmp_path / "run"
    done = sft(run_dir, "--split_dataset_ratio", "0.25", "--eval_steps", "2", oom="eval:4")
    message = checked_error(done, "while evaluating at step 4")
    assert f"checkpoint is kept: {run_dir / 'checkpoint-2'};" in message
    whole_checkpoint(run_dir / "checkpoint-2", 2)


def test_the_test_hook_refuses_a_value_it_does_not_know(tmp_path):
    done = sft(tmp_path / "run", oom="sometime:3")
    assert done.returncode == 2 and "TUNEWISE_TEST_OOM=sometime:3: expected WHEN:STEP[:KIND]" in done.stderr
