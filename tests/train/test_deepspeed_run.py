"""Issue 3's acceptance runs: two CPU processes (gloo) under DeepSpeed, a JSON whose WarmupLR block would flatten
the cosine schedule. Slow (each run starts two processes); DeepSpeed is an optional extra."""
import json
import subprocess
import sys

import pytest

pytest.importorskip("deepspeed")
pytestmark = pytest.mark.slow

WARMUP_LR_ZERO3 = {
    "zero_optimization": {"stage": 3, "overlap_comm": False, "stage3_gather_16bit_weights_on_model_save": True},
    "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto", "train_batch_size": "auto",
    "gradient_clipping": "auto",
    "scheduler": {"type": "WarmupLR", "params": {"warmup_min_lr": "auto", "warmup_max_lr": "auto",
                                                 "warmup_num_steps": "auto"}},
}


def sft(tmp_path, *extra):
    cfg = tmp_path / "zero3.json"
    cfg.write_text(json.dumps(WARMUP_LR_ZERO3))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "tunewise.cli", "sft", "--dataset", "self_cognition#32", "--model_name", "N",
           "--model_author", "A", "--max_steps", "8", "--logging_steps", "1", "--save_steps", "8",
           "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1", "--learning_rate", "1e-3",
           "--lr_scheduler_type", "cosine", "--warmup_ratio", "0.1", "--report_to", "none", "--nproc_per_node", "2",
           "--master_port", "29611", "--deepspeed", str(cfg), "--output_dir", str(out), "--add_version", "false", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = [json.loads(line) for line in (out / "logging.jsonl").read_text().splitlines()]
    plan = json.loads((out / "plan.json").read_text())
    return proc, [r for r in log if "lr" in r], plan, out


def test_flags_win_over_the_json_scheduler_with_a_warning(tmp_path):
    proc, logged, plan, out = sft(tmp_path)
    assert "WarmupLR" in proc.stdout + proc.stderr  # the one warning names the block
    assert [r["step"] for r in logged] == list(range(1, 9))
    for r in logged:
        assert r["lr"] == pytest.approx(r["planned_lr"], rel=1e-9)
    assert logged[-1]["lr"] < 0.2 * max(r["lr"] for r in logged)  # it decays: cosine, not WarmupLR's flat line
    assert (out / "last").resolve().name == "checkpoint-8"


def test_keep_follows_the_json_scheduler_and_the_plan_shows_it(tmp_path):
    proc, logged, plan, out = sft(tmp_path, "--deepspeed_scheduler", "keep")
    assert "WarmupLR" in proc.stdout + proc.stderr
    for r in logged:
        assert r["lr"] == pytest.approx(r["planned_lr"], rel=1e-9)
    assert logged[-1]["lr"] == pytest.approx(1e-3)  # flat at the peak after warm-up, as the plan says
