"""Short LoRA runs of `tunewise sft` in subprocesses, for the data-parallel equality tests (one process with
gradient accumulation 2 against 2 processes: DDP, DeepSpeed, FSDP; one node or two). Imported as
`from parallel_runs import ...`."""
import json
import subprocess
import sys
from pathlib import Path

from safetensors.torch import load_file

STEPS = 3
FLAGS = ["--dataset", "self_cognition#16", "--model_name", "N", "--model_author", "A", "--max_steps", str(STEPS),
         "--logging_steps", "1", "--save_steps", str(STEPS), "--learning_rate", "1e-3", "--warmup_steps", "0",
         "--report_to", "none", "--per_device_train_batch_size", "1"]


def start(out: Path, *extra, prefix=(), env=None) -> subprocess.Popen:
    """`tunewise sft` with FLAGS into `out`, started under `prefix` (e.g. `ip netns exec NAME`)."""
    cmd = [*prefix, sys.executable, "-m", "tunewise.cli", "sft", *FLAGS, "--output_dir", str(out), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def finish(proc: subprocess.Popen, timeout=600) -> str:
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
    assert proc.returncode == 0, output[-3000:]
    return output


class Result:
    """A finished run: its folder, printed output, logged losses and final adapter weights."""

    def __init__(self, run_dir: Path, output: str):
        self.run_dir, self.output = run_dir, output
        self.losses = [json.loads(line)["loss"] for line in (run_dir / "logging.jsonl").read_text().splitlines()
                       if '"loss"' in line]
        self.weights = load_file(run_dir / f"checkpoint-{STEPS}" / "adapter_model.safetensors")


def train(out: Path, *extra, env=None) -> Result:
    """One run on this machine, written straight into `out` (--add_version false)."""
    return Result(out, finish(start(out, "--add_version", "false", *extra, env=env)))


def one_process(out: Path) -> Result:
    """The reference every engine on 2 processes must equal: one process, gradient accumulation 2."""
    return train(out, "--gradient_accumulation_steps", "2")


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)
