"""A written GGUF's architecture metadata and tensor list, read with gguf-py's GGUFReader (what llama.cpp reads),
checked against the model it was written from: the architecture, every hyper-parameter llama.cpp builds the graph
from (context length, widths, layer and head counts, the key/value head width, RMS-norm epsilon, RoPE base and
scaling), the vocabulary size, and each tensor's name and shape.

transformers' read-back rebuilds the config from these keys for Qwen2, so a wrong key there already shows in the
logits; for Qwen3 it ignores attention.key_length and is given the source model's config instead (see
gguf_file.CONFIG_NOT_READ_BACK), so these keys are proven here and nowhere else."""
from __future__ import annotations

import math
from pathlib import Path

from tunewise.export.checks import Broken


def _value(reader, key: str):
    field = reader.fields.get(key)
    return None if field is None else field.contents()


def expected_keys(config, family) -> dict:
    """GGUF key -> the value llama.cpp must read for the model (None: the key must be absent)."""
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    rope = dict(getattr(config, "rope_parameters", None) or {})
    rope_type = rope.get("rope_type", "default")
    a = family.name
    keys = {
        "general.architecture": a,
        f"{a}.context_length": config.max_position_embeddings,
        f"{a}.embedding_length": config.hidden_size,
        f"{a}.block_count": config.num_hidden_layers,
        f"{a}.feed_forward_length": config.intermediate_size,
        f"{a}.attention.head_count": heads,
        f"{a}.attention.head_count_kv": config.num_key_value_heads,
        # llama.cpp's n_embd_head_k/v: the key when present, else embedding_length / head_count
        f"{a}.attention.key_length": head_dim,
        f"{a}.attention.value_length": head_dim,
        f"{a}.attention.layer_norm_rms_epsilon": config.rms_norm_eps,
        f"{a}.rope.freq_base": rope.get("rope_theta", getattr(config, "rope_theta", 10000.0)),
        f"{a}.rope.scaling.type": rope_type if rope_type in ("linear", "yarn") else None,
    }
    if rope_type in ("linear", "yarn"):
        keys[f"{a}.rope.scaling.factor"] = rope["factor"]
    if rope_type == "yarn":
        keys[f"{a}.rope.scaling.original_context_length"] = rope["original_max_position_embeddings"]
    return keys


def _read_keys(reader, keys: dict, family) -> dict:
    got = {key: _value(reader, key) for key in keys}
    width = got[f"{family.name}.embedding_length"]
    heads = got[f"{family.name}.attention.head_count"]
    for kind in ("key_length", "value_length"):  # absent: llama.cpp's default
        key = f"{family.name}.attention.{kind}"
        if got[key] is None and isinstance(width, int) and isinstance(heads, int) and heads:
            got[key] = width // heads
    return got


def _same(want, got) -> bool:
    if isinstance(want, float) and isinstance(got, (int, float)):
        return math.isclose(want, got, rel_tol=1e-6)  # stored as float32
    return want == got


def check_metadata(path: Path, config, state_dict: dict, family) -> dict:
    """The file's keys and tensors against the model's; raises Broken naming each difference. Returns what was
    checked, for export.json."""
    import gguf

    from tunewise.export.gguf_file import gguf_names

    reader = gguf.GGUFReader(str(path))
    want = expected_keys(config, family)
    got = _read_keys(reader, want, family)
    problems = [f"{key} is {got[key]!r}, the model's is {value!r}" for key, value in want.items()
                if not _same(value, got[key])]
    tokens = len(reader.fields["tokenizer.ggml.tokens"].data) if "tokenizer.ggml.tokens" in reader.fields else 0
    if tokens != config.vocab_size:
        problems.append(f"the vocabulary has {tokens} tokens, the model's vocab_size is {config.vocab_size}")
    wanted = {name: list(state_dict[hf].shape) for name, hf in gguf_names(state_dict, config, family)}
    stored = {t.name: [int(d) for d in reversed(t.shape.tolist())] for t in reader.tensors}  # GGUF: ne, innermost first
    problems += [f"tensor {name} is missing" for name in wanted if name not in stored]
    problems += [f"tensor {name} is not the model's" for name in stored if name not in wanted]
    problems += [f"tensor {name} has shape {stored[name]}, the model's is {shape}" for name, shape in wanted.items()
                 if name in stored and stored[name] != shape]
    if problems:
        raise Broken(f"the export is broken, so nothing was written: its GGUF metadata, read back with gguf's "
                     f"GGUFReader, is not the model's: {'; '.join(problems)}.")
    keys = {k: v for k, v in want.items() if v is not None}
    return {"equal_to_the_model": f"{len(keys)} architecture keys, the vocabulary size ({tokens}), {len(wanted)} "
                                  "tensors' names and shapes",
            "read_with": "gguf.GGUFReader", "keys": keys, "vocabulary": tokens, "tensors": len(wanted),
            "config_read_back_by_transformers": family.config_read_back}
