"""What a training run computes on, and the choices that follow from it, made in one place and shown in the plan.

The choices that differ between a CPU and a GPU: the weights' dtype for `--torch_dtype auto`, the attention kernel
for padding-free (packed) batches, the loss path and its chunk size, and Liger's kernels. `Device.current()` reads
the machine; `choose(...)` is pure (a Device in, a DevicePlan out), so the GPU's choices are tested on a CPU.

Measured reasons (../shared/notes/gpu-h200-2026-12-04.md, benchmarks/RESULTS.md):
- CPU: float32. bf16 rounding makes a result depend on the batch's shape, and on a CPU without oneDNN's bf16 kernels
  (no AVX-512) a bf16 product is 3-300x slower than float32 (models/float32_matmuls.py; with the kernels, bf16 is
  faster: measured 2.1 s against 7.9 s a step at Qwen2.5-0.5B's width). The padding-free path is per-row SDPA (one call per row and layer, no T x T mask),
  and the loss runs the output layer at the trained positions in 64 MiB chunks recomputed in the backward pass
  (the best measured on 2 cores: 4x TRL's defaults).
- CUDA: bf16 weights on a GPU that computes bf16 (peft keeps LoRA's trainable weights in float32). A packed batch
  goes through one varlen flash-attention launch per layer (flash-attn's, else torch's own
  `torch.nn.attention.varlen`), not a Python loop over rows. The loss is Liger's fused linear cross-entropy when
  liger-kernel is installed, else the output layer at the trained positions in as few launches as the GPU's free
  memory allows: the CPU's small recomputed chunks halved the H200's throughput.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

from tunewise import ranks
from tunewise.args import installed
from tunewise.errors import UserError
from tunewise.models.quantization import quantization_of

GiB = 1024 ** 3
FLASH_PACKAGES = {"flash_attention_2": ("flash_attn", "pip install flash-attn --no-build-isolation"),
                  "flash_attention_3": ("flash_attn_interface", "install FlashAttention-3 (its hopper/ build)")}
LIGER_INSTALL = "pip install 'tunewise[gpu]' (liger-kernel)"


@dataclass(frozen=True)
class Device:
    """The device one training process computes on."""

    kind: str  # "cuda" | "cpu"
    name: str
    bf16: bool = False  # computes bfloat16 at speed (CUDA: compute capability 8.0 and later; CPU: oneDNN bf16)
    memory: int | None = None  # bytes (CUDA)

    @classmethod
    def current(cls) -> "Device":
        import torch

        if torch.cuda.is_available():
            index = ranks.local_rank() % torch.cuda.device_count()
            props = torch.cuda.get_device_properties(index)
            return cls("cuda", props.name, torch.cuda.is_bf16_supported(including_emulation=False),
                       props.total_memory)
        from tunewise.models.float32_matmuls import bf16_matmuls_are_fast

        return cls("cpu", f"CPU ({os.cpu_count()} cores)", bf16_matmuls_are_fast())

    @property
    def cuda(self) -> bool:
        return self.kind == "cuda"

    def describe(self) -> str:
        if not self.cuda:
            return self.name
        return f"{self.name} ({self.memory / GiB:.1f} GiB{', bf16' if self.bf16 else ''})"


@dataclass(frozen=True)
class DevicePlan:
    """The device-dependent choices of one run. `dtype` is what the weights load as; `attn_impl` is transformers'
    attention implementation (None: tunewise's "sdpa", which routes packed batches to `attention`); `attention`:
    "flash" (transformers' flash-attention varlen), "varlen" (torch's varlen flash kernel), "rows" (per-row SDPA),
    "mask" (transformers' block-diagonal mask: eager/flex) or "padded"; `loss`: "liger", "chunks" (CPU: 64 MiB,
    recomputed), "trained" (CUDA: trained positions, chunk from free memory), "inside" (sharded engines) or
    "model" (the model's own loss over every position)."""

    device: Device
    dtype: str
    attn_impl: str | None
    attention: str
    loss: str
    liger: bool
    why: dict = field(default_factory=dict)  # choice -> reason, as the plan shows it
    notes: tuple[str, ...] = ()
    float32_matmuls: bool = False  # bf16 weights on a CPU without bf16 matrix kernels: products in float32
    quantization: str | None = None  # QLoRA (--quant_bits): how the base model's linear layers are held

    def compute(self):
        """The context training computes in: Float32Matmuls where the plan says so, else nothing."""
        import contextlib

        if not self.float32_matmuls:
            return contextlib.nullcontext()
        from tunewise.models.float32_matmuls import Float32Matmuls

        return Float32Matmuls()

    def lines(self) -> list[str]:
        dtype = self.dtype + (f"; base linear layers in {self.quantization}" if self.quantization else "")
        rows = [("dtype", dtype), ("attention", ATTENTION_TEXT[self.attention]), ("loss", LOSS_TEXT[self.loss])]
        out = [f"device: {self.device.describe()}"]
        for name, text in rows:
            reason = self.why.get(name)
            out.append(f"  {name:<10} {text}" + (f"  ({reason})" if reason else ""))
        return out + [f"note: {n}" for n in self.notes]

    def as_dict(self) -> dict:
        return {"device": self.device.describe(), "kind": self.device.kind, "dtype": self.dtype,
                "attn_impl": self.attn_impl, "attention": self.attention, "loss": self.loss, "liger": self.liger,
                "why": dict(self.why), "notes": list(self.notes), "float32_matmuls": self.float32_matmuls,
                "quantization": self.quantization}


ATTENTION_TEXT = {
    "flash": "flash-attention varlen: one kernel launch per layer for a packed batch",
    "varlen": "torch's varlen flash attention (torch.nn.attention.varlen): one launch per layer for a packed batch",
    "rows": "per-row SDPA for packed batches (one SDPA call per row and layer, no T x T mask)",
    "mask": "transformers' block-diagonal mask for packed batches",
    "padded": "padded batches (SDPA with a padding mask)",
}
LOSS_TEXT = {
    "liger": "Liger's fused linear cross-entropy (no logits tensor)",
    "chunks": "output layer + cross-entropy at the trained positions only, 64 MiB chunks recomputed in backward",
    "trained": "output layer + cross-entropy at the trained positions only, in as few chunks as free GPU memory "
               "allows (measured at the first step)",
    "inside": "the model computes logits at the trained positions only (the engine shards the output layer)",
    "model": "the model's own loss (logits at every position)",
}


def varlen_available() -> bool:
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401  (torch >= 2.10)
    except ImportError:
        return False
    return True


def resolve_dtype(asked: str, device: Device, stored: str, train_type: str) -> tuple[str, str, list[str]]:
    """(dtype, why, notes) for --torch_dtype `asked` on `device`; `stored`: the checkpoint's own dtype."""
    notes = []
    if asked == "auto":
        if device.cuda and device.bf16:
            why = "auto on a GPU that computes bf16" + (": LoRA's trainable weights stay float32 (peft)"
                                                          if train_type == "lora" else "")
            if train_type == "full":
                notes.append("full fine-tuning in bf16 weights (as ms-swift and TRL with a bf16 model): an AdamW "
                             "update below bf16's resolution (~0.4 % of a weight) is lost; --torch_dtype float32 keeps "
                             "float32 weights at twice the memory")
            return "bfloat16", why, notes
        if device.cuda:
            return ("float32", "auto on a GPU without native bf16 (give --torch_dtype float16 for fp16 mixed "
                    "precision)", notes)
        kept = f"; the checkpoint is stored in {stored}" if stored not in ("float32", "") else ""
        return "float32", f"auto on a CPU{kept}", notes
    if asked == "float16" and not device.cuda:
        raise UserError("--torch_dtype float16: fp16 mixed precision (its loss scaling) needs a CUDA GPU, and this "
                        "machine has none. On a CPU the same recipe runs as --torch_dtype float32 (or auto); a "
                        'DeepSpeed JSON with "fp16": {"enabled": true} needs "enabled": "auto" there. On a GPU it '
                        "runs as written.")
    if asked == "bfloat16" and not device.cuda:
        notes.append("--torch_dtype bfloat16 on a CPU: no mixed precision here (that is CUDA's); the weights, "
                     "activations and gradients are bf16 and results depend on the batch's shape in their last bits "
                     "(auto picks float32 on a CPU)" + ("" if device.bf16 else
                     "; this CPU has no bf16 matrix kernels (oneDNN without AVX-512), where a bf16 product runs "
                     "3-300x slower than float32, so each matrix product is computed in float32 from the bf16 "
                     "weights (bf16 in memory, float32's speed)"))
    return asked, "given", notes


def choose_attention(attn_impl: str | None, device: Device, dtype: str, padding_free: bool,
                     have=installed) -> tuple[str | None, str, str]:
    """(attn_impl for transformers, attention path, why)."""
    if attn_impl in FLASH_PACKAGES:
        package, how = FLASH_PACKAGES[attn_impl]
        if not device.cuda:
            raise UserError(f"--attn_impl {attn_impl}: flash-attention runs on CUDA GPUs only and this machine has "
                            "none; leave --attn_impl out (sdpa).")
        if not have(package):
            raise UserError(f"--attn_impl {attn_impl}: the {package} package is not installed; {how}, or leave "
                            "--attn_impl out (tunewise then uses torch's varlen kernel for packed batches).")
        if dtype == "float32":
            raise UserError(f"--attn_impl {attn_impl}: flash-attention computes in bf16 or fp16, and the weights "
                            "are float32; give --torch_dtype bfloat16 (or auto).")
        return attn_impl, "flash" if padding_free else "padded", "given"
    if attn_impl in ("eager", "flex_attention"):
        return attn_impl, "mask" if padding_free else "padded", "given"
    if not padding_free:
        return attn_impl, "padded", "--padding_free false"
    if device.cuda and dtype != "float32":
        if have("flash_attn"):
            return "flash_attention_2", "flash", "flash-attn is installed"
        if varlen_available():
            return attn_impl, "varlen", "flash-attn not installed; torch has its own varlen kernel"
        return attn_impl, "rows", "neither flash-attn nor torch.nn.attention.varlen (torch >= 2.10) is available"
    if device.cuda:
        return attn_impl, "rows", "flash kernels do not compute in float32"
    return attn_impl, "rows", "CPU: the measured best"


def choose_loss(args, device: Device, sharded: bool, have=installed) -> tuple[str, bool, str]:
    """(loss path, Liger on, why) for --chunked_loss / --use_liger_kernel (None: auto); a given
    --use_liger_kernel true that cannot run here is a UserError (the only place that checks it)."""
    liger = args.use_liger_kernel
    if liger is None:
        liger = device.cuda and have("liger_kernel")
        why = "liger-kernel is installed" if liger else None
    else:
        why = "given"
    if liger:
        if not device.cuda:
            raise UserError("--use_liger_kernel true: Liger's kernels run on CUDA GPUs only and none is visible; "
                            "leave it out (--chunked_loss, the default, keeps the logits small on any device).")
        if not have("liger_kernel"):
            raise UserError(f"--use_liger_kernel true: the liger-kernel package is not installed; {LIGER_INSTALL}.")
        return "liger", True, why
    if not args.chunked_loss:
        return "model", False, "--chunked_loss false"
    if sharded:
        return "inside", False, "DeepSpeed ZeRO-3 / FSDP shard the output layer"
    if device.cuda:
        return "trained", False, f"liger-kernel not installed ({LIGER_INSTALL} for the fused loss)"
    return "chunks", False, "CPU: the measured best"


def choose(args, device: Device, stored_dtype: str, sharded: bool = False, have=installed) -> DevicePlan:
    """The DevicePlan of a run's args (SftArgs/DpoArgs) on `device`; a UserError for what cannot run there."""
    dtype, dtype_why, notes = resolve_dtype(args.torch_dtype, device, stored_dtype, args.train_type)
    padding_free = getattr(args, "padding_free", False)
    attn_impl, attention, attention_why = choose_attention(args.attn_impl, device, dtype, padding_free, have)
    loss, liger, loss_why = choose_loss(args, device, sharded, have)
    why = {"dtype": dtype_why, "attention": attention_why, "loss": loss_why}
    quant = quantization_of(args)
    if quant is not None and quant.bits == 4 and quant.compute_dtype is None:
        quant = replace(quant, compute_dtype=dtype)  # a 4-bit layer computes in the weights' dtype (models/load.py)
    return DevicePlan(device, dtype, attn_impl, attention, loss, liger, {k: v for k, v in why.items() if v},
                      tuple(notes), float32_matmuls=dtype == "bfloat16" and not device.cuda and not device.bf16,
                      quantization=quant.describe() if quant else None)
