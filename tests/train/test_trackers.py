"""--report_to wandb / swanlab (tunewise.train.trackers): offline into the run directory without a login; a clear
error before anything is written when the package is missing."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from cli_runs import run_cli

FLAGS = ["--dataset", "self_cognition#8", "--model_name", "N", "--model_author", "A", "--max_steps", 2,
         "--logging_steps", 1, "--save_steps", 2, "--add_version", "false"]


def test_wandb_logs_offline_into_the_run_directory(tmp_path):
    """A real wandb run in offline mode (no API key, no ~/.netrc login): its files in RUN_DIR/wandb, and the
    summary it prints when the run is finished holds the losses logging.jsonl holds."""
    pytest.importorskip("wandb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env["HOME"] = str(tmp_path / "home")
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "tunewise.cli", "sft", *map(str, FLAGS), "--report_to", "wandb",
                           "--output_dir", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    output = proc.stdout + proc.stderr
    assert "wandb: offline (no API key or login)" in output
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb")), list((out / "wandb").iterdir())
    summary = dict(line.split()[1:3] for line in output.split("Run summary:")[1].splitlines()
                   if len(line.split()) == 3 and line.startswith("wandb:"))
    losses = [r["loss"] for r in map(json.loads, (out / "logging.jsonl").read_text().splitlines()) if "loss" in r]
    assert summary["train/global_step"] == "2" and float(summary["train/loss"]) == pytest.approx(losses[-1], abs=1e-5)


@pytest.mark.parametrize("name", ["wandb", "swanlab"])
def test_a_tracker_that_is_not_installed_is_an_error_before_anything_is_written(name, tmp_path, capsys):
    if importlib.util.find_spec(name) is not None:
        pytest.skip(f"{name} is installed here")
    assert run_cli("sft", *FLAGS, "--report_to", name, "--output_dir", tmp_path / "run") == 2
    assert f"--report_to {name}: the {name} package is not installed; pip install {name}" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
