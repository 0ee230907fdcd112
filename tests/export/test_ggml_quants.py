"""The GGML types a GGUF export picks (llama.cpp's rules) and the encodings into them, read back by gguf-py's own
dequantizer."""
import numpy as np
import pytest

import gguf
from gguf.quants import dequantize

from tunewise.export.ggml_quants import encode, tensor_type, use_more_bits

T = gguf.GGMLQuantizationType


def test_use_more_bits_picks_llama_cpps_layers():
    # i < n/8, i >= 7n/8, or every third layer from n/8 on (src/llama-quant.cpp)
    assert [i for i in range(24) if use_more_bits(i, 24)] == [0, 1, 2, 5, 8, 11, 14, 17, 20, 21, 22, 23]
    assert [i for i in range(4) if use_more_bits(i, 4)] == [2, 3]  # n/8 = 0, 7n/8 = 3


def qwen05_types(gguf_type: str) -> dict:
    """name -> type for Qwen2.5-0.5B's layout (hidden 896, intermediate 4864, 24 layers, tied embeddings)."""
    shapes = {"token_embd.weight": (151936, 896), "output_norm.weight": (896,)}
    for i in range(24):
        shapes.update({f"blk.{i}.attn_q.weight": (896, 896), f"blk.{i}.attn_q.bias": (896,),
                       f"blk.{i}.attn_k.weight": (128, 896), f"blk.{i}.attn_v.weight": (128, 896),
                       f"blk.{i}.attn_output.weight": (896, 896), f"blk.{i}.ffn_gate.weight": (4864, 896),
                       f"blk.{i}.ffn_up.weight": (4864, 896), f"blk.{i}.ffn_down.weight": (896, 4864),
                       f"blk.{i}.attn_norm.weight": (896,), f"blk.{i}.ffn_norm.weight": (896,)})
    return {name: tensor_type(gguf_type, name, shape, 24, True).name for name, shape in shapes.items()}


def test_q4_k_m_mixture_on_qwen25_05b_shapes():
    types = qwen05_types("q4_k_m")
    # 896 is no multiple of 256: the tied embedding (the output) is Q8_0, Q4_K falls back to Q5_0, Q6_K to Q8_0
    assert types["token_embd.weight"] == "Q8_0" and types["output_norm.weight"] == "F32"
    assert types["blk.3.attn_q.bias"] == "F32" and types["blk.3.attn_norm.weight"] == "F32"
    assert {types[f"blk.{i}.attn_q.weight"] for i in range(24)} == {"Q5_0"}
    assert [types[f"blk.{i}.attn_v.weight"] for i in range(24)] == \
        ["Q8_0" if use_more_bits(i, 24) else "Q5_0" for i in range(24)]
    # ffn_down's rows are 4864 = 19 x 256 long: real K-quants
    assert [types[f"blk.{i}.ffn_down.weight"] for i in range(24)] == \
        ["Q6_K" if use_more_bits(i, 24) else "Q4_K" for i in range(24)]


def test_q4_k_m_uses_k_quants_where_rows_split_into_256():
    assert tensor_type("q4_k_m", "output.weight", (6144, 256), 4, False).name == "Q6_K"
    assert tensor_type("q4_k_m", "token_embd.weight", (6144, 256), 4, False).name == "Q4_K"  # untied: not the output
    assert tensor_type("q4_k_m", "token_embd.weight", (6144, 256), 4, True).name == "Q6_K"
    assert tensor_type("q4_k_m", "blk.1.attn_q.weight", (256, 256), 4, True).name == "Q4_K"
    assert tensor_type("q4_k_m", "blk.2.attn_v.weight", (64, 256), 4, True).name == "Q6_K"  # use_more_bits(2, 4)
    assert tensor_type("q4_k_m", "blk.1.ffn_down.weight", (256, 704), 4, True).name == "Q5_0"  # 704 % 256 != 0
    assert tensor_type("q4_k_m", "blk.1.ffn_down.weight", (256, 48), 4, True).name == "F16"  # nor 32


@pytest.mark.parametrize("gguf_type, matrix, vector", [("f16", "F16", "F32"), ("q8_0", "Q8_0", "F32")])
def test_f16_and_q8_0_follow_convert_hf_to_gguf(gguf_type, matrix, vector):
    assert tensor_type(gguf_type, "blk.0.ffn_up.weight", (704, 256), 4, True).name == matrix
    assert tensor_type(gguf_type, "blk.0.attn_k.bias", (64,), 4, True).name == vector
    assert tensor_type(gguf_type, "output_norm.weight", (256,), 4, True).name == vector
    assert tensor_type("q8_0", "blk.0.ffn_up.weight", (704, 40), 4, True).name == "F16"  # rows not in 32s


# The relative RMS error of each encoding on these weights (measured, deterministic for the seed: F16 0.00021,
# Q8_0 0.0055, Q6_K 0.018, Q5_0 0.044, Q4_K 0.072), bounded at twice that: what the format's bits allow, while a
# wrong block layout (scales and codes read back out of place) errs by about 1.
ERROR_BOUNDS = {"F16": 0.0005, "Q8_0": 0.011, "Q6_K": 0.036, "Q5_0": 0.088, "Q4_K": 0.144}


@pytest.mark.parametrize("name", list(ERROR_BOUNDS))
def test_encodings_read_back_by_gguf_py(name):
    rng = np.random.default_rng(0)
    weights = (rng.standard_normal((64, 512)) * 0.02).astype(np.float32)
    weights[3, 17] = 0.4  # an outlier: its block's scale must carry it
    qtype = T[name]
    data = encode(weights, qtype)
    back = dequantize(data, qtype) if data.dtype == np.uint8 else data.astype(np.float32)
    assert back.shape == weights.shape
    rel = float(np.sqrt(np.mean((back - weights) ** 2)) / np.sqrt(np.mean(weights ** 2)))
    assert rel < ERROR_BOUNDS[name], rel
    assert abs(back[3, 17] - 0.4) < 0.05  # the outlier survives
    if data.dtype == np.uint8:
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        assert data.shape == (64, 512 // block * size)


def test_float16_overflow_is_an_error_not_inf():
    from tunewise.errors import UserError

    with pytest.raises(UserError, match="float16's range"):
        encode(np.array([[1.0, 70000.0]], dtype=np.float32), T.F16)
