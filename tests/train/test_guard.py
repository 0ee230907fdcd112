"""The schedule guard firing for real: a plan that the optimizer does not follow stops the run with exit code 2."""
import subprocess
import sys

import pytest

SCRIPT = r"""
import sys
from tunewise.plan.schedule import LRSchedule
planned = LRSchedule.lr_at
# the plan says double the rate from step 4 on; the Trainer, configured as before, keeps the real curve
LRSchedule.lr_at = lambda self, step: planned(self, step) * (2 if step >= 4 else 1)
from tunewise.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow  # trains a model for more than a few seconds
def test_a_mismatch_stops_the_run_with_one_paragraph_and_keeps_the_last_checkpoint(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, "sft", "--dataset", "self_cognition#8", "--model_name", "N",
                           "--model_author", "A", "--max_steps", "8", "--logging_steps", "2", "--save_steps", "2",
                           "--report_to", "none", "--output_dir", str(out), "--add_version", "false"],
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if "error:" in x]
    assert line.startswith("tunewise sft: error: schedule guard: at step 4 the logged learning rate is")
    assert "but the plan says" in line and "Likely causes: a DeepSpeed JSON 'scheduler' block" in line
    assert f"is kept: {out / 'checkpoint-2'}" in line and "--schedule_guard warn" in line
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
