"""benchmarks/gpu.sh, so that it still runs when a GPU is next lent: its --cpu mode end to end (the same steps at
toy sizes), and the report's arithmetic."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_report  # noqa: E402

STEPS = {("LoRA 0.5B-tiny", "tunewise"), ("LoRA 0.5B-tiny", "trl"), ("full 0.5B-tiny packed", "tunewise, Liger off"),
         ("full 0.5B-tiny packed", "tunewise, Liger on"), ("LoRA 7B-tiny", "tunewise"), ("LoRA 7B-tiny", "trl")}


def test_peak_by_device_name():
    assert gpu_report.peak_flops("NVIDIA H200") == 989e12
    assert gpu_report.peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert gpu_report.peak_flops("NVIDIA H100 PCIe") == 756e12
    assert gpu_report.peak_flops("NVIDIA GeForce RTX 4090") is None  # "unknown peak" in the report


def test_plan_estimate_from_the_printed_plan_or_plan_json(tmp_path):
    log = "Training plan\n...\nmemory estimate: 3.28 GiB per device (196.0 M parameters, 1.10 M trainable)\n"
    assert gpu_report.plan_estimate(None, log) == (3.28, {})
    assert gpu_report.plan_estimate(None, "memory estimate: 512.0 MiB per device (4.4 M")[0] == 0.5
    plan = {"steps": {}, "schedule": {}, "extra": {"engine": "one process", "memory": {"total": 2 * 2**30}},
            "device_choices": {"loss": "liger"}}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    estimate, choices = gpu_report.plan_estimate(str(tmp_path), log)
    assert estimate == 2.0  # plan.json's own figure, when it has one, before the printed one
    assert choices == {"extra": plan["extra"], "device_choices": {"loss": "liger"}}


def test_last_error_names_the_exception():
    log = "Traceback (most recent call last):\n  File x\ntorch.OutOfMemoryError: CUDA out of memory.\n[rank0] bye\n"
    assert gpu_report.last_error(log) == "torch.OutOfMemoryError: CUDA out of memory."
    assert gpu_report.last_error("error: --packing true needs ...\n") == "error: --packing true needs ..."


def test_a_full_run_on_an_h200_gets_mfu_and_cuda_peaks(tmp_path):
    """What a GPU row will show, from a made-up child result: steady tokens/s after the warm-up micro-batches,
    MFU = 6 N tokens/s over the H200's 989 TFLOP/s, the estimate against max_memory_reserved."""
    steps = [{"t": 10.0 + i, "shape": [1, 16384], "labels": 8000, "tokens": 16000} for i in range(5)]
    result = {"start": 9.0, "end": 15.0, "steps": steps, "log_history": [{"loss": 12.0}, {"loss": 11.5}],
              "threads": 16, "peak_reserved_gib": 40.0, "peak_allocated_gib": 30.0, "peak_rss_gib": 3.0}
    row = {"step": "full 0.5B packed", "system": "tunewise, Liger on", "train_type": "full", "batch": 8,
           "max_steps": 5, "parameters": 494_032_768, "status": "ok", "seconds": 30.0, "run_dir": str(tmp_path)}
    info = {"peak_bf16_flops": gpu_report.peak_flops("NVIDIA H200")}
    gpu_report.summarise(row, {"result": result, "output": "memory estimate: 36.00 GiB per device (494.0 M"}, info, 2)
    assert row["tok_s"] == 3 * 16000 / 3.0  # micro-batches 3-5, from the third's start to the loop's end
    assert row["mfu"] == pytest.approx(6 * 494_032_768 * 16000 / 989e12)
    assert row["estimate_over_peak"] == pytest.approx(36 / 40)
    res = {"mode": "gpu", "device_name": "NVIDIA H200", "device_memory_gib": 139.8, "date": "2026-12-05", "cuda": "13.0",
           "python": "3.12.3", "tunewise_commit": "abc1234", "peak_bf16_flops": 989e12, "fixtures": {},
           "versions": dict.fromkeys(gpu_report.PACKAGES, "1.0"), "exactness": {"status": "absent"}, "rows": [row]}
    text = gpu_report.markdown(res)
    assert "989 TFLOP/s" in text and f"{100 * row['mfu']:.1f} %" in text and "40.00 / 30.00 GiB" in text


@pytest.mark.slow
def test_cpu_mode_runs_every_step_and_writes_the_report(tmp_path):
    out = tmp_path / "results"
    env = {**os.environ, "PYTHON": sys.executable, "GPU_BENCH_WORK": str(tmp_path / "work")}
    env.pop("OUT", None)
    proc = subprocess.run(["bash", "benchmarks/gpu.sh", "--cpu", "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    [md], [js] = sorted(out.glob("*.md")), sorted(out.glob("*.json"))
    res = json.loads(js.read_text())
    for key in ("date", "device_name", "python", "tunewise_commit", "versions", "settings", "elapsed_s"):
        assert res[key], key
    assert res["mode"] == "cpu" and res["peak_bf16_flops"] is None
    assert {"torch", "transformers", "peft", "trl", "liger-kernel"} <= set(res["versions"])
    assert res["exactness"]["status"] in ("absent", "ok")
    assert {shape: f["status"] for shape, f in res["fixtures"].items()} == {"0.5B-tiny": "ok", "7B-tiny": "ok"}
    rows = {(r["step"], r["system"]): r for r in res["rows"]}
    assert set(rows) == STEPS
    liger = rows[("full 0.5B-tiny packed", "tunewise, Liger on")]
    assert liger["status"] == "skipped" and "CUDA" in liger["error"]
    trl_here = all(importlib.util.find_spec(m) for m in ("trl", "datasets"))
    for key, row in rows.items():
        if key == ("full 0.5B-tiny packed", "tunewise, Liger on"):
            continue
        if row["system"] == "trl" and not trl_here:
            assert row["status"] == "skipped" and "not installed" in row["error"]
            continue
        assert row["status"] == "ok", (key, row.get("error"), row.get("log_tail"))
        for field in ("tok_s", "tokens", "labels", "first_loss", "final_loss", "peak_rss_gib"):
            assert row[field] > 0, (key, field)
        assert row["micro_batches"] == row["max_steps"]
        if row["system"] != "trl":
            assert row["memory_estimate_gib"] > 0 and row["estimate_over_peak"] > 0, key
            assert "extra" in row["plan"], key
    full = rows[("full 0.5B-tiny packed", "tunewise, Liger off")]
    assert full["model_tflops"] > 0 and full["mfu"] is None  # a CPU has no entry in the peak table
    assert max(full["per_step_tokens"]) > 256  # packed: one sequence of several rows per micro-batch
    if trl_here:  # same rows, same batches, same labels: the same losses
        for shape in ("0.5B-tiny", "7B-tiny"):
            ours, theirs = rows[(f"LoRA {shape}", "tunewise")], rows[(f"LoRA {shape}", "trl")]
            assert ours["per_step_tokens"] == theirs["per_step_tokens"]
            assert abs(ours["final_loss_vs_trl_pct"]) < 1, ours["final_loss_vs_trl_pct"]
    text = md.read_text()
    assert "| LoRA 0.5B-tiny | tunewise | ok |" in text and "skipped: Liger" in text
    assert "### Training" in proc.stdout  # the table is printed too
