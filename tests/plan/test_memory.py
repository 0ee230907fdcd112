"""The memory estimate: hand-worked Qwen2.5-7B figures, and the embedded model's estimate against the peak memory
a real CPU training run reaches."""
import json
import os
import subprocess
import sys

import pytest

from tunewise.plan.memory import ModelShape, estimate_memory, format_memory, lora_parameters, parse_size

QWEN25_7B = {"model_type": "qwen2", "hidden_size": 3584, "num_hidden_layers": 28, "num_attention_heads": 28,
             "num_key_value_heads": 4, "intermediate_size": 18944, "vocab_size": 152064,
             "tie_word_embeddings": False, "torch_dtype": "bfloat16"}


def test_qwen25_7b_parameter_count_by_hand():
    shape = ModelShape.from_config(QWEN25_7B)
    h, kv, i = 3584, 4 * 128, 18944
    layer = (h * h + h) + 2 * (h * kv + kv) + h * h + 3 * h * i + 2 * h  # q (bias), k, v (bias), o, MLP, 2 norms
    assert layer == 233_057_792
    assert shape.parameters() == 28 * layer + 2 * 152064 * h + h == 7_615_616_512
    # LoRA r=8 on all linear layers: r * (in + out) each; peft reports 20,185,088 trainable for this model
    assert lora_parameters(shape, 8) == 28 * 8 * ((h + h) + 2 * (h + kv) + (h + h) + 3 * (h + i)) == 20_185_088


def test_qwen25_7b_memory_by_hand():
    w = estimate_memory(QWEN25_7B, "inference", seq_len=1, batch_size=1)
    assert w.parts["weights"] == 2 * 7_615_616_512 and 15.2e9 < w.parts["weights"] < 15.3e9  # bf16 ~ 15.2 GB
    full = estimate_memory(QWEN25_7B, "full", master_weights=True, seq_len=2048)
    static = full.parts["weights"] + full.parts["gradients"] + full.parts["optimizer"]
    assert 16 <= static / full.parameters <= 18  # mixed-precision AdamW: 2 + 2 + 4 + 4 + 4 bytes
    pure = estimate_memory(QWEN25_7B, "full", seq_len=2048)  # bf16 weights, torch AdamW states in bf16
    assert (pure.parts["weights"] + pure.parts["gradients"] + pure.parts["optimizer"]) / pure.parameters == 8
    # KV cache with GQA: 2 (k, v) * 28 layers * 4 kv heads * 128 * 2 bytes = 57,344 bytes per token
    kv = estimate_memory(QWEN25_7B, "inference", seq_len=32768)
    assert kv.parts["kv_cache"] == 57_344 * 32768
    assert any("GQA" in n for n in kv.notes)
    # gradient checkpointing and ZeRO-3 sharding shrink what one GPU holds
    lora = dict(seq_len=2048, capacity="24GiB")
    assert not estimate_memory(QWEN25_7B, "lora", **lora).fits
    assert estimate_memory(QWEN25_7B, "lora", gradient_checkpointing=True, **lora).fits
    z3 = estimate_memory(QWEN25_7B, "full", master_weights=True, zero_stage=3, world_size=8, seq_len=2048)
    assert z3.parts["optimizer"] == full.parts["optimizer"] // 8 and z3.parts["weights"] == full.parts["weights"] // 8
    off = estimate_memory(QWEN25_7B, "full", master_weights=True, zero_stage=3, world_size=8, seq_len=2048,
                          offload_optimizer=True, offload_params=True)
    assert off.parts["optimizer"] == 0 and off.cpu_offload >= full.parts["optimizer"] // 8
    assert "does NOT fit" in format_memory(estimate_memory(QWEN25_7B, "full", master_weights=True, capacity="80GB"))


def test_sizes():
    assert parse_size("24GiB") == 24 * 2**30 and parse_size("80GB") == 80 * 10**9 and parse_size("16g") == 16 * 2**30


# ---------------------------------------------------------------------------------------------------------------
MEASURE = r"""
import gc, json, os, resource, sys
from tunewise.cli import main
from tunewise.recipes import sft

def status(key):  # VmRSS / VmHWM (the peak) in bytes
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))

marks = {}
build = sft.build_model
def measured_build(run):  # everything but the model, its training state and activations is loaded by now
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak (VmHWM) to the current RSS
    marks["before"] = status("VmRSS")
    marks["hwm_before"] = status("VmHWM")
    marks["seq_len"] = max(len(r["input_ids"]) for r in run.train_rows)
    return build(run)
sft.build_model = measured_build
assert main(["sft", *sys.argv[1:]]) == 0
marks["peak"] = status("VmHWM")
print("MEASURED " + json.dumps(marks))
"""


def long_rows(path, n=8, chars=500):
    """Rows with long replies, so that activations are a large part of the peak."""
    text = "的一是了我不人在他有这个上们来到时大地为子中你说生国年着就那和要她出也得里后自以会家可下而过天去能对小多然于心学么之都好看起发当"
    rows = [{"query": f"请写第{k}段。", "response": "".join(text[(k * 7 + j * j) % len(text)] for j in range(chars))}
            for k in range(n)]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def measure(tmp_path, train_type, batch):
    data = long_rows(tmp_path / "long.jsonl")
    argv = ["--dataset", str(data), "--train_type", train_type, "--max_steps", "2", "--per_device_train_batch_size",
            str(batch), "--gradient_accumulation_steps", "1", "--save_steps", "1000", "--report_to", "none",
            "--max_length", "4096", "--output_dir", str(tmp_path / train_type), "--add_version", "false",
            "--torch_dtype", "float32"]
    # A fixed mmap threshold makes glibc return freed large blocks, so RSS follows live memory; with its default
    # (a threshold that grows to 32 MB) freed activation blocks stay resident and RSS overstates the need.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536"}
    proc = subprocess.run([sys.executable, "-c", MEASURE, *argv], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    marks = json.loads(proc.stdout.split("MEASURED ", 1)[1])
    assert marks["hwm_before"] <= marks["before"] * 1.01  # the peak was reset: only the training run counts
    return marks


@pytest.mark.slow
@pytest.mark.parametrize("train_type, batch", [("full", 4), ("lora", 4)])
def test_memory_estimate_within_20_percent_of_a_real_cpu_run(tmp_path, train_type, batch):
    from tunewise.models.load import resolve_model

    marks = measure(tmp_path, train_type, batch)
    measured = marks["peak"] - marks["before"]
    est = estimate_memory(resolve_model("tunewise-tiny"), train_type, weight_dtype="float32", batch_size=batch,
                          seq_len=marks["seq_len"], device="cpu", padding_free=True, chunked_loss=True)  # sft's defaults
    whole = est.total
    process = est.parts.pop("process")  # first what training adds to the process, then the whole process
    print(f"{train_type}: estimated {est.total / 2**20:.1f} MiB, measured {measured / 2**20:.1f} MiB "
          f"({est.total / measured - 1:+.1%}); {est.parts}")
    assert 0.8 <= est.total / measured <= 1.2, (est.total, measured, est.parts)
    print(f"whole process: estimated {whole / 2**20:.1f} MiB (process {process / 2**20:.0f} MiB), measured peak RSS "
          f"{marks['peak'] / 2**20:.1f} MiB ({whole / marks['peak'] - 1:+.1%})")
    assert 0.8 <= whole / marks["peak"] <= 1.2, (whole, marks["peak"])
