"""A base model held in bitsandbytes' 4-bit (NF4/FP4) or 8-bit (LLM.int8) weights: QLoRA's base (`--quant_bits` on
sft/dpo) and `tunewise export --quant_method bnb`.

`Quantization` is what the flags ask for; `bnb_config` makes transformers' BitsAndBytesConfig of it (models/load.py
passes it to from_pretrained); `backend_problem` says why bitsandbytes cannot run on a device, found by running
it (a quantized layer's forward and backward on a tiny tensor), not by reading version numbers.

A fact of bitsandbytes 0.50 on CPUs with AVX512-BF16 (benchmarks/QUANT.md): the first no-grad forward of a 4-bit
layer in eval mode repacks its weight into a CPU-only layout. Training that goes on after an evaluation then
fails in the backward, and a checkpoint saved after that forward is corrupt once loaded back (the inverse layout
transform drops the transposed absmax). `for_training` turns the repacking off for a model that trains; the
export saves before any forward.
"""
from __future__ import annotations

from dataclasses import dataclass

from tunewise.errors import UserError, brief

BITS = (4, 8)
QUANT_METHODS = ("bnb",)
QUANT_TYPES = ("nf4", "fp4")
BNB_INSTALL = "pip install 'tunewise[quant]' (bitsandbytes)"


@dataclass(frozen=True)
class Quantization:
    """How the base model's linear layers are held: `bits` 4 (`quant_type` nf4|fp4, `double_quant`: the
    block scales quantized too) or 8; `compute_dtype`: what a 4-bit layer computes in (None: the weights' dtype)."""

    bits: int
    quant_type: str = "nf4"
    double_quant: bool = True
    compute_dtype: str | None = None

    def describe(self) -> str:
        if self.bits == 8:
            return "bitsandbytes LLM.int8 8-bit"
        return (f"bitsandbytes {self.quant_type} 4-bit{' (double quant)' if self.double_quant else ''}"
                + (f", computed in {self.compute_dtype}" if self.compute_dtype else ""))


def quantization_of(args) -> Quantization | None:
    """The Quantization a training run's args ask for (--quant_bits and the --bnb_4bit_* flags), or None."""
    bits = getattr(args, "quant_bits", None)
    if bits is None:
        return None
    return Quantization(bits, args.bnb_4bit_quant_type, args.bnb_4bit_use_double_quant, args.bnb_4bit_compute_dtype)


def bnb_config(quant: Quantization, weights_dtype):
    """transformers' BitsAndBytesConfig for `quant`; a 4-bit layer computes in `weights_dtype` unless
    `quant.compute_dtype` names another (a torch dtype, or "auto": float32)."""
    import torch
    from transformers import BitsAndBytesConfig

    if quant.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = getattr(torch, quant.compute_dtype) if quant.compute_dtype else weights_dtype
    compute = torch.float32 if compute in (None, "auto") else compute
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant.quant_type,
                              bnb_4bit_use_double_quant=quant.double_quant, bnb_4bit_compute_dtype=compute)


def backend_problem(bits: int, device: str = "cpu") -> str | None:
    """Why bitsandbytes cannot hold `bits`-bit weights on `device` ("cpu" | "cuda"), or None when it can: the
    package imports, and a quantized linear layer of its runs a forward and a backward there with finite results
    close to the float32 layer's."""
    try:
        import bitsandbytes as bnb
    except ImportError as e:
        return f"the bitsandbytes package is not installed ({e}); {BNB_INSTALL}"
    except Exception as e:  # a broken native library raises at import (OSError, RuntimeError)
        return f"bitsandbytes {brief(e, 200)} at import"
    import torch

    try:
        torch.manual_seed(0)
        dense = torch.nn.Linear(64, 64, bias=False)
        if bits == 4:
            layer = bnb.nn.Linear4bit(64, 64, bias=False, compute_dtype=torch.float32, quant_type="nf4")
            layer.weight = bnb.nn.Params4bit(dense.weight.data.clone(), requires_grad=False, quant_type="nf4")
        else:
            layer = bnb.nn.Linear8bitLt(64, 64, bias=False, has_fp16_weights=False)
            layer.weight = bnb.nn.Int8Params(dense.weight.data.clone(), requires_grad=False, has_fp16_weights=False)
        layer = layer.to(device)
        x = torch.randn(4, 64, device=device, requires_grad=True)
        out = layer(x)
        out.float().sum().backward()
        expected = dense.to(device)(x.detach())
    except Exception as e:  # whatever the native code raises is the reason, said as it is
        return f"bitsandbytes {bnb.__version__} cannot run a {bits}-bit layer on {device}: {brief(e, 300)}"
    if not (torch.isfinite(out).all() and x.grad is not None and torch.isfinite(x.grad).all()):
        return f"bitsandbytes {bnb.__version__} computes non-finite values for a {bits}-bit layer on {device}"
    error = ((out.float() - expected).norm() / expected.norm()).item()
    if error > 0.2:  # measured: 0.08 for nf4, 0.003 for int8 (QUANT.md); a wrong kernel is ~1
        return (f"bitsandbytes {bnb.__version__} computes a {bits}-bit layer on {device} with a relative error of "
                f"{error:.2f} against float32 (expected below 0.2)")
    return None


def check_backend(bits: int, device: str, flag: str) -> None:
    """A UserError naming `flag` when bitsandbytes cannot run `bits`-bit layers on `device`."""
    problem = backend_problem(bits, device)
    if problem:
        raise UserError(f"{flag}: {problem}.")


class _Once:
    """A logging filter that lets each message through once: bitsandbytes' LLM.int8 layers log "inputs will be cast
    from torch.float32 to float16" at every call of every layer."""

    def __init__(self):
        self.seen: set[str] = set()

    def filter(self, record) -> bool:
        text = record.getMessage()
        if text in self.seen:
            return False
        self.seen.add(text)
        return True


def say_casts_once() -> None:
    import logging

    logger = logging.getLogger("bitsandbytes.autograd._functions")
    if not any(isinstance(f, _Once) for f in logger.filters):
        logger.addFilter(_Once())


def for_training(model, gradient_checkpointing: bool):
    """A quantized model made ready for adapters (peft's prepare_model_for_kbit_training: every base weight frozen,
    16-bit norms and embeddings in float32, inputs that carry gradients under checkpointing), with bitsandbytes'
    CPU inference repacking off (see the module docstring)."""
    from peft import prepare_model_for_kbit_training

    say_casts_once()
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
    return model
