"""Which GGML type each tensor of a GGUF export gets, and the encoding into it.

The choices are llama.cpp's: `convert_hf_to_gguf.py --outtype f16|q8_0` (1-D tensors and norms stay F32; q8_0 falls
back to F16 where a row does not split into 32-value blocks) and `llama-quantize ... Q4_K_M` (src/llama-quant.cpp,
the rules a dense non-Falcon model meets): the output matrix, and the token embedding when it is tied to it, in Q6_K
(Q8_0 when its rows do not split into 256-value blocks); attn_v and ffn_down in Q6_K on the layers `use_more_bits`
picks, Q4_K elsewhere; every other matrix Q4_K; a matrix whose rows do not split into 256 falls back to Q5_0 (from
Q4_K) or Q8_0 (from Q6_K), and one that does not split into 32 either to F16.

Encoding: F16/F32 by numpy; Q8_0 and Q5_0 by gguf-py's own quantizers (gguf.quants); Q4_K and Q6_K, which gguf-py
can read but not write, by ggml's reference quantizer `ggml_quantize_chunk`, the function llama-quantize calls (no
importance matrix), from the prebuilt ggml of the `libggml-python` wheel. tests/export/test_ggml_quants.py reads
each back with gguf-py's dequantizer.
"""
from __future__ import annotations

import ctypes
import functools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tunewise.errors import UserError


@dataclass(frozen=True)
class GgufType:
    name: str  # --gguf_type
    file_type: str  # gguf.LlamaFileType member: general.file_type
    ppl_bound: float  # an export whose held-out perplexity exceeds the unquantized model's by more is broken
    about: str


GGUF_TYPES = {
    "f16": GgufType("f16", "MOSTLY_F16", 1.01, "16-bit floats: the weights as trained, halved in size"),
    "q8_0": GgufType("q8_0", "MOSTLY_Q8_0", 1.01, "8-bit blocks of 32 (llama.cpp's Q8_0), about 1/2 of f16"),
    "q4_k_m": GgufType("q4_k_m", "MOSTLY_Q4_K_M", 1.10,
                       "llama.cpp's Q4_K_M mixture: 4-bit K-quants, 6-bit for the output and some attn_v/ffn_down"),
}
QK_K = 256  # values per K-quant super-block


def _q(name: str):
    import gguf

    return gguf.GGMLQuantizationType[name]


def use_more_bits(i_layer: int, n_layers: int) -> bool:
    """llama.cpp's choice of the layers whose attn_v / ffn_down get more bits in the _M mixtures."""
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


def _block_size(qtype) -> int:
    import gguf

    return gguf.GGML_QUANT_SIZES[qtype][0]


def _fallback(qtype, ncols: int):
    """llama.cpp's tensor_type_fallback: a type whose block does not divide the row length is replaced."""
    if ncols % _block_size(qtype) == 0:
        return qtype
    replacement = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}.get(qtype.name)
    qtype = _q(replacement) if replacement else qtype
    return qtype if ncols % _block_size(qtype) == 0 else _q("F16")


_LAYER = re.compile(r"^blk\.(\d+)\.")


def tensor_type(gguf_type: str, name: str, shape: tuple[int, ...], n_layers: int, tied_embeddings: bool):
    """The GGML type of tensor `name` (GGUF name, PyTorch `shape`) in a --gguf_type export."""
    ncols = shape[-1]
    if len(shape) < 2 or name.endswith("_norm.weight") or not name.endswith(".weight"):
        return _q("F32")
    if gguf_type == "f16":
        return _q("F16")
    if gguf_type == "q8_0":
        return _q("Q8_0") if ncols % _block_size(_q("Q8_0")) == 0 else _q("F16")
    if gguf_type != "q4_k_m":
        raise ValueError(gguf_type)
    layer = int(m.group(1)) if (m := _LAYER.match(name)) else None
    if name == "output.weight" or (tied_embeddings and name == "token_embd.weight"):
        return _q("Q8_0") if ncols % QK_K else _q("Q6_K")
    qtype = _q("Q4_K")
    if layer is not None and name.endswith(("attn_v.weight", "ffn_down.weight")) and use_more_bits(layer, n_layers):
        qtype = _q("Q6_K")
    return _fallback(qtype, ncols)


def needs_ggml(gguf_type: str) -> bool:
    return gguf_type == "q4_k_m"


@functools.cache
def _ggml():
    """ggml's shared library from the libggml-python wheel, with ggml_quantize_chunk's signature declared."""
    try:
        import libggml
    except ImportError as e:
        raise UserError("--gguf_type q4_k_m: the K-quants are made by ggml's own quantizer, from the libggml-python "
                        "package, which is not installed: pip install 'tunewise[gguf]' (or libggml-python); "
                        "--gguf_type q8_0 and f16 need only gguf.") from e
    root = Path(libggml.__file__).parent
    found = sorted(root.glob("lib*/libggml-base.so*"))
    if not found:
        raise UserError(f"{root}: the libggml-python package holds no libggml-base.so; reinstall it.")
    lib = ctypes.CDLL(str(found[0]))
    fn = lib.ggml_quantize_chunk
    fn.restype = ctypes.c_size_t
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                   ctypes.c_void_p]
    return fn


def check_available(gguf_type: str) -> None:
    """Before anything is written: the libraries the type needs import (a UserError naming the package if not)."""
    try:
        import gguf  # noqa: F401
    except ImportError as e:
        raise UserError("--quant_method gguf needs the gguf package (llama.cpp's GGUF writer), which is not "
                        "installed: pip install 'tunewise[gguf]' (or gguf).") from e
    if needs_ggml(gguf_type):
        _ggml()


def encode(array: np.ndarray, qtype) -> np.ndarray:
    """`array` (float32, rows last) in GGML type `qtype`: float16/float32 values, or the quantized bytes (uint8,
    one row of blocks per row) that gguf's writer takes with raw_dtype=qtype."""
    import gguf
    from gguf import quants

    if qtype == gguf.GGMLQuantizationType.F32:
        return np.ascontiguousarray(array, dtype=np.float32)
    if qtype == gguf.GGMLQuantizationType.F16:
        with np.errstate(over="ignore"):
            out = array.astype(np.float16)
        if not np.isfinite(out).all() and np.isfinite(array).all():
            raise UserError(f"a weight exceeds float16's range (largest |w| = {float(np.abs(array).max()):.4g} > "
                            "65504): a 16-bit GGUF cannot hold this model; use --gguf_type q8_0.")
        return out
    if qtype.name in ("Q4_K", "Q6_K"):
        return _ggml_quantize(array, qtype)
    return quants.quantize(array, qtype)


def _ggml_quantize(array: np.ndarray, qtype) -> np.ndarray:
    import gguf

    rows = np.ascontiguousarray(array.reshape(-1, array.shape[-1]), dtype=np.float32)
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    out = np.empty((rows.shape[0], rows.shape[1] // block * size), dtype=np.uint8)
    written = _ggml()(int(qtype), rows.ctypes.data, out.ctypes.data, 0, rows.shape[0], rows.shape[1], None)
    if written != out.nbytes:
        raise RuntimeError(f"ggml_quantize_chunk wrote {written} bytes for {qtype.name}, expected {out.nbytes}")
    return out.reshape(*array.shape[:-1], out.shape[-1])
