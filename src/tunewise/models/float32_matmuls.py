"""bf16 weights on a CPU without bf16 matrix instructions: every matrix product computed in float32.

Where oneDNN has no bf16 kernels for the CPU (no AVX-512: `torch.ops.mkldnn._is_mkldnn_bf16_supported()` is False),
torch multiplies bf16 matrices with a reference loop. Measured (2026-12-04, 1 thread, oneDNN limited to AVX2 on an
AMD EPYC): a [512 x 4864] x [4864 x 896] product 3.17 s in bf16 against 0.09 s in float32, the output layer's
backward ([110 x 151,936] x [151,936 x 896]) over 300 s against 0.65 s: a training step 100x slower than float32.
Within `Float32Matmuls`, a matrix product with a bf16 operand upcasts its operands, multiplies in float32 and
returns bf16: the weights stay bf16 in memory (what --torch_dtype bfloat16 is asked for), the arithmetic runs at
float32's speed (a 1-layer Qwen2.5-0.5B-width step: 3.9 s instead of minutes), and autograd differentiates through
the casts, so bf16 parameters get bf16 gradients. Where oneDNN has bf16 kernels this costs time (5.0 s against
1.3 s on the same step) and is not used.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

MATMULS = frozenset({F.linear, torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.mm, torch.Tensor.mm,
                     torch.bmm, torch.Tensor.bmm, torch.addmm, torch.baddbmm})


def bf16_matmuls_are_fast() -> bool:
    """Whether this CPU's oneDNN multiplies bf16 matrices natively (or emulated at float32's speed: AVX-512)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch built without oneDNN
        return False


def _up(value):
    return value.float() if isinstance(value, torch.Tensor) and value.dtype == torch.bfloat16 else value


class Float32Matmuls(TorchFunctionMode):
    """Matrix products with a bf16 operand run in float32 and return bf16 (a context manager)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in MATMULS and any(isinstance(a, torch.Tensor) and a.dtype == torch.bfloat16 for a in args):
            return func(*map(_up, args), **{k: _up(v) for k, v in kwargs.items()}).to(torch.bfloat16)
        return func(*args, **kwargs)
