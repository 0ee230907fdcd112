"""A Hugging Face causal LM (weights in memory, config, tokenizer) written as one GGUF file with llama.cpp's own
writer (the `gguf` package): the architecture's hyper-parameters, the tokenizer (BPE tokens, merges, token types,
bos/eos/pad, the trained chat template) and the tensors under GGUF's names (gguf's tensor name map), each in the
type tunewise.export.ggml_quants picks. What llama.cpp's convert_hf_to_gguf.py writes for the same families, so
llama.cpp, Ollama and transformers (`from_pretrained(dir, gguf_file=...)`) load it.

Families: Qwen2 (Qwen2, Qwen2.5 and tunewise-tiny) and dense Qwen3 (its q_norm/k_norm as attn_q_norm/attn_k_norm, its
head_dim as attention.key_length/value_length, as convert_hf_to_gguf.py writes them), with Qwen2's byte-level BPE
pre-tokenizer (llama.cpp's "qwen2", Qwen3's too). Another family, or a tokenizer that splits text otherwise, is a
UserError before anything is written.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tunewise.errors import UserError

# architecture in config.json -> gguf.MODEL_ARCH member (Qwen3's MoE, Qwen3MoeForCausalLM, is not mapped)
ARCHITECTURES = {"Qwen2ForCausalLM": "QWEN2", "Qwen3ForCausalLM": "QWEN3"}
# Families whose file transformers 5.23 cannot rebuild the model's config from: its GGUF reader ignores
# qwen3.attention.key_length (Qwen3's head_dim, 128, is not hidden/heads) and takes Qwen3Config's default. Their
# read-back is given the source model's config, and tunewise.export.gguf_metadata checks the file's keys instead.
CONFIG_NOT_READ_BACK = {"qwen3"}

# Qwen2's pre-tokenizer (tokenizer.json): NFC, this split, byte-level; llama.cpp calls it "qwen2"
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
               r"\s+(?!\S)|\s+")


@dataclass(frozen=True)
class Family:
    arch: object  # gguf.MODEL_ARCH
    name: str  # llama.cpp's architecture name ("qwen2", "qwen3")

    @property
    def config_read_back(self) -> bool:
        """Whether transformers rebuilds the model's config from the file's metadata (see CONFIG_NOT_READ_BACK)."""
        return self.name not in CONFIG_NOT_READ_BACK


def family_of(config, where: str) -> Family:
    """The GGUF architecture of a model config, or a UserError saying which families the writer maps."""
    import gguf

    archs = list(getattr(config, "architectures", None) or [])
    found = next((ARCHITECTURES[a] for a in archs if a in ARCHITECTURES), None)
    if found is None:
        raise UserError(f"{where}: a {', '.join(archs) or getattr(config, 'model_type', 'unknown')} model; the GGUF "
                        "writer maps Qwen2ForCausalLM (Qwen2/Qwen2.5 and tunewise-tiny) and Qwen3ForCausalLM (dense "
                        "Qwen3) only. Export it merged (without --quant_method) and convert it with "
                        "llama.cpp's convert_hf_to_gguf.py.")
    problems = []
    rope = dict(getattr(config, "rope_parameters", None) or {})
    if rope.get("rope_type", "default") not in ("default", "linear", "yarn"):
        problems.append(f"RoPE scaling {rope.get('rope_type')!r} (the writer handles default, linear and yarn)")
    if any(t != "full_attention" for t in (getattr(config, "layer_types", None) or [])):
        problems.append("sliding-window attention layers (llama.cpp's qwen2/qwen3 attend to the full context)")
    if found == "QWEN3" and getattr(config, "attention_bias", False):
        problems.append("attention biases (Qwen3's q/k/v/o projections have none; the writer maps Qwen3 as it is)")
    if problems:
        raise UserError(f"{where}: {'; '.join(problems)}: a GGUF of it would not compute what the model does.")
    arch = gguf.MODEL_ARCH[found]
    return Family(arch, gguf.MODEL_ARCH_NAMES[arch])


def check_tokenizer(tokenizer, where: str) -> dict:
    """The tokenizer must be byte-level BPE with Qwen2's pre-tokenizer, which is what llama.cpp's "qwen2" splits.
    Returns its tokenizer.json, parsed (Qwen's is 7 MB: ~1 CPU s a parse)."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model = spec.get("model") or {}
    pre = spec.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    split = next((p for p in parts if p.get("type") == "Split"), {})
    ok = (model.get("type") == "BPE" and not model.get("byte_fallback")
          and (spec.get("normalizer") or {}).get("type") in (None, "NFC")
          and split.get("pattern", {}).get("Regex") == QWEN2_SPLIT
          and any(p.get("type") == "ByteLevel" for p in parts))
    if not ok:
        raise UserError(f"{where}: the tokenizer is not byte-level BPE with Qwen2's pre-tokenizer, so llama.cpp "
                        "would split text differently from it; the GGUF writer handles Qwen2-family tokenizers only.")
    return spec


def tokenizer_metadata(tokenizer, vocab_size: int, config_bos: int | None = None, spec: dict | None = None) -> dict:
    """What goes under tokenizer.ggml.*: tokens padded to the model's vocab_size ([PADn], unused), their types,
    the merges, the special ids (bos from config.json when the tokenizer has none, as llama.cpp's converter does)
    and whether bos/eos are added, and the chat template. `spec`: the tokenizer's tokenizer.json, parsed."""
    import gguf

    vocab = tokenizer.get_vocab()
    if max(vocab.values()) >= vocab_size:
        raise UserError(f"the tokenizer has token ids up to {max(vocab.values())}, beyond the model's vocab_size "
                        f"{vocab_size}.")
    by_id = {i: t for t, i in vocab.items()}
    added = {i: tok for i, tok in tokenizer.added_tokens_decoder.items()}
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        tokens.append(by_id[i])
        if i in added:
            special = added[i].special or (by_id[i].startswith("<|") and by_id[i].endswith("|>"))
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
    spec = spec if spec is not None else json.loads(tokenizer.backend_tokenizer.to_str())
    merges = spec["model"]["merges"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    return {
        "tokens": tokens, "types": types, "merges": merges,
        "bos": tokenizer.bos_token_id if tokenizer.bos_token_id is not None else config_bos,
        "eos": tokenizer.eos_token_id, "pad": tokenizer.pad_token_id,
        "add_bos": len(probe) > len(plain) and probe[0] == tokenizer.bos_token_id,
        "add_eos": len(probe) > len(plain) and probe[-1] == tokenizer.eos_token_id,
        "chat_template": tokenizer.chat_template,
    }


def _hyper_parameters(writer, config, family: Family) -> None:
    import gguf

    heads = config.num_attention_heads
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    rope = dict(getattr(config, "rope_parameters", None) or {})
    writer.add_rope_freq_base(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0)))
    head_dim = getattr(config, "head_dim", None)
    if head_dim and (family.name == "qwen3" or head_dim != config.hidden_size // heads):  # qwen3: as llama.cpp's
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    if rope.get("rope_type") == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(rope["factor"])
    elif rope.get("rope_type") == "yarn":
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(rope["factor"])
        writer.add_rope_scaling_orig_ctx_len(rope["original_max_position_embeddings"])


def _tokenizer(writer, meta: dict) -> None:
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(meta["tokens"])
    writer.add_token_types(meta["types"])
    writer.add_token_merges(meta["merges"])
    for key, add in (("bos", writer.add_bos_token_id), ("eos", writer.add_eos_token_id),
                     ("pad", writer.add_pad_token_id)):
        if meta[key] is not None:
            add(meta[key])
    writer.add_add_bos_token(meta["add_bos"])
    writer.add_add_eos_token(meta["add_eos"])
    if meta["chat_template"]:
        writer.add_chat_template(meta["chat_template"])


def gguf_names(state_dict: dict, config, family: Family):
    """(GGUF name, Hugging Face name) for each weight written; a tied lm_head is the token embedding and is not."""
    import gguf

    names = gguf.get_tensor_name_map(family.arch, config.num_hidden_layers)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    for name in state_dict:
        if tied and name == "lm_head.weight":
            continue
        mapped = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if mapped is None:
            raise UserError(f"weight {name}: no GGUF name for it in gguf's {family.name} tensor map; the model is not "
                            f"the {family.name} layout the writer knows.")
        yield mapped, name


def gguf_tensors(state_dict: dict, config, family: Family):
    """(GGUF name, float32 numpy array) for each weight written."""
    for mapped, name in gguf_names(state_dict, config, family):
        yield mapped, state_dict[name].detach().float().cpu().numpy()


def write_gguf(path: Path, state_dict: dict, config, tokenizer, gguf_type: str, name: str) -> dict:
    """Write the model to `path` as a --gguf_type GGUF; returns {GGML type name: tensor count}."""
    import gguf

    from tunewise.export.ggml_quants import GGUF_TYPES, encode, tensor_type

    family = family_of(config, name)
    spec = check_tokenizer(tokenizer, name)
    meta = tokenizer_metadata(tokenizer, config.vocab_size, getattr(config, "bos_token_id", None), spec)
    writer = gguf.GGUFWriter(str(path), family.name)
    writer.add_name(name)
    writer.add_file_type(gguf.LlamaFileType[GGUF_TYPES[gguf_type].file_type])
    if gguf_type != "f16":
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _hyper_parameters(writer, config, family)
    _tokenizer(writer, meta)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    counts: dict[str, int] = {}
    for gguf_name, array in gguf_tensors(state_dict, config, family):
        qtype = tensor_type(gguf_type, gguf_name, array.shape, config.num_hidden_layers, tied)
        data = encode(array, qtype)
        raw = qtype if data.dtype == "uint8" else None
        writer.add_tensor(gguf_name, data, raw_dtype=raw)
        counts[qtype.name] = counts.get(qtype.name, 0) + 1
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return counts
