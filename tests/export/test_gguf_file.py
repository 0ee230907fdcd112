"""A GGUF written by tunewise holds what llama.cpp reads (architecture, hyper-parameters, tokenizer, tensors under
GGUF's names in llama.cpp's types), and transformers reads it back into the same model."""
import json
import shutil

import numpy as np
import pytest
import torch
from gguf import GGUFReader

from tunewise.errors import UserError
from tunewise.export.gguf_file import check_tokenizer, family_of, write_gguf
from tunewise.models.load import load_model, load_tokenizer, resolve_model

TINY = resolve_model("tunewise-tiny")


@pytest.fixture(scope="module")
def tiny():
    return load_model(TINY, "float32").eval(), load_tokenizer(TINY)


def field(reader, key):
    f = reader.fields[key]
    value = f.contents()
    return value


def read_back(folder, name):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return (AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=name, dtype=torch.float32).eval(),
            AutoTokenizer.from_pretrained(str(folder), gguf_file=name))


def test_metadata_is_what_llama_cpp_reads(tiny, tmp_path):
    model, tok = tiny
    counts = write_gguf(tmp_path / "m.gguf", model.state_dict(), model.config, tok, "f16", "tunewise-tiny")
    r = GGUFReader(tmp_path / "m.gguf")
    c = model.config
    assert field(r, "general.architecture") == "qwen2" and field(r, "general.file_type") == 1
    assert [field(r, f"qwen2.{k}") for k in ("context_length", "embedding_length", "block_count",
                                              "feed_forward_length", "attention.head_count",
                                              "attention.head_count_kv")] == \
        [c.max_position_embeddings, c.hidden_size, c.num_hidden_layers, c.intermediate_size,
         c.num_attention_heads, c.num_key_value_heads]
    assert field(r, "qwen2.rope.freq_base") == pytest.approx(10000.0)
    assert field(r, "qwen2.attention.layer_norm_rms_epsilon") == pytest.approx(1e-6)
    tokens = field(r, "tokenizer.ggml.tokens")
    types = field(r, "tokenizer.ggml.token_type")
    assert field(r, "tokenizer.ggml.model") == "gpt2" and field(r, "tokenizer.ggml.pre") == "qwen2"
    assert len(tokens) == len(types) == c.vocab_size == 6144
    assert tokens[6141] == "<|im_end|>" and types[6141] == 3  # CONTROL
    assert tokens[100] == tok.convert_ids_to_tokens(100) and types[100] == 1  # NORMAL
    merges = json.loads(tok.backend_tokenizer.to_str())["model"]["merges"]
    assert field(r, "tokenizer.ggml.merges")[:3] == [" ".join(m) for m in merges[:3]]
    assert field(r, "tokenizer.ggml.eos_token_id") == 6141 and field(r, "tokenizer.ggml.padding_token_id") == 6142
    assert "tokenizer.ggml.bos_token_id" not in r.fields and field(r, "tokenizer.ggml.add_bos_token") is False
    assert field(r, "tokenizer.chat_template") == tok.chat_template
    names = {t.name for t in r.tensors}
    assert "output.weight" not in names  # tied: llama.cpp uses token_embd
    assert {"token_embd.weight", "output_norm.weight", "blk.3.attn_q.bias", "blk.3.ffn_down.weight"} <= names
    assert len(names) == 2 + 4 * 12 and counts == {"F16": 29, "F32": 21}
    assert {t.tensor_type.name for t in r.tensors if t.name.endswith("_norm.weight") or ".bias" in t.name} == {"F32"}


# Largest |logit difference| of the f16 file against the float32 model on the probe prompt: 0.042 measured (the
# logits reach 24; float16 keeps 11 bits of each weight); deterministic on one CPU kind, bounded at 3x.
F16_MAX_ABS_DIFF = 0.13


def test_f16_reads_back_as_the_model(tiny, tmp_path):
    model, tok = tiny
    write_gguf(tmp_path / "m.gguf", model.state_dict(), model.config, tok, "f16", "tunewise-tiny")
    back, back_tok = read_back(tmp_path, "m.gguf")
    text = tok.apply_chat_template([{"role": "user", "content": "Who are you? 你是谁？ 12+34=?"}], tokenize=False,
                                   add_generation_prompt=True)
    ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    assert back_tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"].tolist() == ids.tolist()
    assert back_tok.chat_template == tok.chat_template and back_tok.eos_token == "<|im_end|>"
    with torch.no_grad():
        diff = (back(input_ids=ids).logits - model(input_ids=ids).logits).abs().max().item()
    assert 0 < diff < F16_MAX_ABS_DIFF
    for name, p in back.state_dict().items():  # every matrix is the float16 rounding of the model's, vectors exact
        want = model.state_dict()[name]
        assert torch.equal(p, want.half().float() if want.dim() > 1 else want), name


def test_untied_output_and_quantized_types(tmp_path, tiny):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    _, tok = tiny
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=6144, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                         max_position_embeddings=512, architectures=["Qwen2ForCausalLM"])
    model = Qwen2ForCausalLM(config).eval()
    counts = write_gguf(tmp_path / "m.gguf", model.state_dict(), config, tok, "q4_k_m", "untied")
    r = GGUFReader(tmp_path / "m.gguf")
    types = {t.name: t.tensor_type.name for t in r.tensors}
    assert types["output.weight"] == "Q6_K" and types["token_embd.weight"] == "Q4_K"
    assert types["blk.0.attn_v.weight"] == "Q4_K" and types["blk.1.attn_v.weight"] == "Q6_K"  # use_more_bits(1, 2)
    assert types["blk.0.ffn_down.weight"] == "Q4_K" and types["blk.1.ffn_down.weight"] == "Q6_K"
    assert field(r, "general.file_type") == 15 and field(r, "general.quantization_version") == 2
    assert sum(counts.values()) == len(types)
    back, _ = read_back(tmp_path, "m.gguf")
    assert not back.config.tie_word_embeddings
    w = model.lm_head.weight.detach()
    rel = ((back.lm_head.weight - w).norm() / w.norm()).item()
    assert rel < 0.036  # Q6_K of these random weights: measured 0.0178, bounded at twice that


def test_an_unmapped_family_is_refused(tmp_path):
    from transformers import LlamaConfig

    with pytest.raises(UserError, match=r"a LlamaForCausalLM model; the GGUF writer maps Qwen2ForCausalLM \(Qwen2"):
        family_of(LlamaConfig(architectures=["LlamaForCausalLM"]), "some-llama")
    from transformers import Qwen2Config

    sliding = Qwen2Config(architectures=["Qwen2ForCausalLM"], num_hidden_layers=2, use_sliding_window=True,
                          sliding_window=64, max_window_layers=1)
    if any(t != "full_attention" for t in sliding.layer_types):
        with pytest.raises(UserError, match="sliding-window"):
            family_of(sliding, "windowed")


def test_a_tokenizer_llama_cpp_would_split_otherwise_is_refused(tiny):
    from transformers import GPT2Tokenizer

    _, tok = tiny
    spec = json.loads(tok.backend_tokenizer.to_str())["model"]
    gpt2 = GPT2Tokenizer(vocab=spec["vocab"], merges=[tuple(m) for m in spec["merges"]])  # GPT-2's split regex
    with pytest.raises(UserError, match="Qwen2's pre-tokenizer"):
        check_tokenizer(gpt2, "a GPT-2 tokenizer")
    check_tokenizer(tok, "tunewise-tiny")  # Qwen2's passes
