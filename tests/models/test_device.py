"""The device-dependent choices (tunewise.models.device): dtype, attention path for packed batches, loss path,
each chosen from a Device description, so a GPU's choices are checked on a CPU; the clean errors for what a device
cannot run; bf16 on a CPU without bf16 matrix kernels (float32 products), detected for real in a subprocess."""
import os
import re
import subprocess
import sys

import pytest
import torch

from tunewise.args import SftArgs
from tunewise.errors import UserError
from tunewise.models.device import Device, choose

H200 = Device("cuda", "NVIDIA H200", bf16=True, memory=140 * 1024 ** 3)
V100 = Device("cuda", "Tesla V100", bf16=False, memory=32 * 1024 ** 3)
CPU = Device("cpu", "CPU (2 cores)", bf16=True)
CPU_AVX2 = Device("cpu", "CPU (2 cores)", bf16=False)


def have(*packages):
    return lambda name: name in packages


def test_a_cpu_trains_float32_per_row_sdpa_and_64_mib_chunks_whatever_the_checkpoint_stores():
    plan = choose(SftArgs(), CPU, "bfloat16", have=have())
    assert (plan.dtype, plan.attention, plan.loss, plan.liger) == ("float32", "rows", "chunks", False)
    assert "the checkpoint is stored in bfloat16" in plan.why["dtype"]
    assert not plan.float32_matmuls
    assert plan.lines()[0] == "device: CPU (2 cores)"


def test_a_bf16_gpu_trains_bf16_with_a_varlen_kernel_and_liger_when_installed():
    plan = choose(SftArgs(), H200, "bfloat16", have=have("liger_kernel"))
    assert (plan.dtype, plan.attention, plan.loss, plan.liger, plan.attn_impl) == (
        "bfloat16", "varlen", "liger", True, None)
    assert "LoRA's trainable weights stay float32" in plan.why["dtype"]
    plan = choose(SftArgs(), H200, "bfloat16", have=have("flash_attn"))
    assert (plan.attention, plan.attn_impl, plan.loss) == ("flash", "flash_attention_2", "trained")
    assert "tunewise[gpu]" in plan.why["loss"]  # how to get the fused loss
    full = choose(SftArgs(train_type="full"), H200, "bfloat16", have=have())
    assert full.dtype == "bfloat16" and any("--torch_dtype float32 keeps float32 weights" in n for n in full.notes)


def test_the_gpu_paths_that_depend_on_the_run():
    assert choose(SftArgs(), H200, "", sharded=True, have=have()).loss == "inside"
    assert choose(SftArgs(chunked_loss=False), H200, "", have=have()).loss == "model"
    assert choose(SftArgs(use_liger_kernel=False), H200, "", have=have("liger_kernel")).loss == "trained"
    assert choose(SftArgs(padding_free=False), H200, "", have=have("flash_attn")).attention == "padded"
    # flash kernels do not compute in float32: packed rows go row by row
    assert choose(SftArgs(torch_dtype="float32"), H200, "", have=have("flash_attn")).attention == "rows"
    assert choose(SftArgs(), V100, "", have=have()).dtype == "float32"  # no bf16: float32 unless asked


@pytest.mark.parametrize("device, flags, packages, message", [
    (CPU, {"attn_impl": "flash_attention_2"}, (), "flash-attention runs on CUDA GPUs only"),
    (H200, {"attn_impl": "flash_attention_2"}, (), "pip install flash-attn --no-build-isolation"),
    (H200, {"attn_impl": "flash_attention_2", "torch_dtype": "float32"}, ("flash_attn",),
     "give --torch_dtype bfloat16"),
    (CPU, {"torch_dtype": "float16"}, (), "fp16 mixed precision (its loss scaling) needs a CUDA GPU"),
    (CPU, {"use_liger_kernel": True}, ("liger_kernel",), "Liger's kernels run on CUDA GPUs only"),
    (H200, {"use_liger_kernel": True}, (), "pip install 'tunewise[gpu]' (liger-kernel)"),
])
def test_what_a_device_cannot_run_is_a_clean_error(device, flags, packages, message):
    with pytest.raises(UserError, match=re.escape(message)):
        choose(SftArgs(**flags), device, "", have=have(*packages))


def test_bf16_on_a_cpu_is_said_and_computed_in_float32_where_the_cpu_has_no_bf16_kernels():
    plan = choose(SftArgs(torch_dtype="bfloat16"), CPU, "", have=have())
    assert plan.dtype == "bfloat16" and not plan.float32_matmuls
    assert any("no mixed precision here" in n for n in plan.notes)
    plan = choose(SftArgs(torch_dtype="bfloat16"), CPU_AVX2, "", have=have())
    assert plan.float32_matmuls and any("computed in float32 from the bf16" in n for n in plan.notes)


def test_float32_products_keep_bf16_weights_gradients_and_the_loss():
    """Measured (2026-12-04, ATEN_CPU_CAPABILITY avx512 / avx2 / default): the embedded model's bf16 loss on these
    tokens, 11.78-11.79, moves by 0.0004 / 0.0042 / 0.0004 with float32 products (bf16 results of float32
    products); the bound 0.02 is about 5x the largest, a third of bf16's step (0.0625) at that loss."""
    from tunewise.models.float32_matmuls import Float32Matmuls
    from tunewise.models.load import load_model, resolve_model

    model = load_model(resolve_model("tunewise-tiny"), "bfloat16").train()
    ids = torch.tensor([[5, 17, 300, 41, 9, 77, 1200, 3]])
    plain = model(input_ids=ids, labels=ids).loss
    with Float32Matmuls():
        mode = model(input_ids=ids, labels=ids).loss
        mode.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.bfloat16 and torch.isfinite(g).all() for g in grads)
    print(f"loss {plain.item():.6g} plain bf16, {mode.item():.6g} with float32 products")
    assert abs(mode.item() - plain.item()) < 0.02


def test_the_plan_finds_a_cpu_without_bf16_kernels_for_real(tmp_path):
    """oneDNN limited to AVX2 has no bf16 kernels (the case of CPUs without AVX-512): the plan says so."""
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-m", "tunewise.cli", "plan", "--dataset", "tiny_skills#8",
                          "--torch_dtype", "bfloat16", "--output_dir", str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "this CPU has no bf16 matrix kernels" in out.stdout
