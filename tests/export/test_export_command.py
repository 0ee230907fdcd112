"""`tunewise export`: every export is read back and compared with its source before it is published, and described
in export.json; a broken export or bad input is exit code 2 with nothing written."""
import json
import sys

import pytest

from cli_runs import run_cli

# Largest |logit difference| on the probe prompts (logits up to 24), measured with the test adapter: merging in
# float32 changes only the rounding of the sums, 1.1e-5 (bound: 1e-3); its f16 GGUF, 0.0087 (tunewise-tiny alone
# 0.0065); deterministic on one CPU kind, bounded at 3x.
MERGE_MAX_ABS_DIFF = 1e-3
F16_MAX_ABS_DIFF = 0.026


def export_json(out):
    return json.loads((out / "export.json").read_text(encoding="utf-8"))


def no_temporaries(folder):
    return not [p for p in folder.iterdir() if p.name.endswith(".tmp") or ".merged." in p.name]


@pytest.mark.slow
def test_a_merged_export_is_compared_with_the_adapter(lora_checkpoint, tmp_path, capsys):
    out = tmp_path / "merged"
    assert run_cli("export", "--adapters", lora_checkpoint, "--output_dir", out) == 0
    printed = capsys.readouterr().out
    assert f"merged model written to {out}" in printed and "run it:" in printed
    info = export_json(out)
    assert info["kind"] == "merged" and info["source"]["adapter"] == str(lora_checkpoint)
    checks = info["checks"]
    assert all(checks["tokenizer"].values()) and checks["logits"]["max_abs_diff"] < MERGE_MAX_ABS_DIFF
    assert checks["perplexity"]["ratio"] == pytest.approx(1.0, abs=1e-4)
    assert [a["same"] for a in checks["answers"]] == [True, True, True]
    files = {f["name"]: f["bytes"] for f in info["files"]}
    assert files["model.safetensors"] == (out / "model.safetensors").stat().st_size
    assert f"vllm serve {out}" in info["run"] and f"tunewise serve --model {out}" in info["run"]


def test_a_gguf_export_with_an_ollama_modelfile(lora_checkpoint, tmp_path, capsys):
    import torch

    threads = torch.get_num_threads()
    out = tmp_path / "gguf"
    assert run_cli("export", "--adapters", lora_checkpoint, "--quant_method", "gguf", "--gguf_type", "f16",
                   "--to_ollama", "true", "--output_dir", out) == 0
    info = export_json(out)
    assert sorted(p.name for p in out.iterdir()) == ["Modelfile", "export.json", "model-f16.gguf"]
    assert info["gguf"]["tensor_types"] == {"F16": 29, "F32": 21}
    assert info["checks"]["tokenizer"] == {"chat_template_equal": True, "probe_prompt_ids_equal": True,
                                           "heldout_row_ids_equal": True, "end_of_turn_ids_equal": True}
    assert 0 < info["checks"]["logits"]["max_abs_diff"] < F16_MAX_ABS_DIFF
    assert info["checks"]["perplexity"]["ratio"] < 1.01
    modelfile = (out / "Modelfile").read_text()
    assert "FROM ./model-f16.gguf" in modelfile and info["ollama"]["template"] in modelfile
    assert f"ollama create checkpoint-1 -f {out / 'Modelfile'}" in info["run"] or \
        any(line.startswith("ollama create ") and line.endswith(f"-f {out / 'Modelfile'}") for line in info["run"])
    assert f"llama-cli -m {out / 'model-f16.gguf'}" in info["run"]
    assert "gguf export written to" in capsys.readouterr().out
    assert no_temporaries(tmp_path)
    assert torch.get_num_threads() == threads  # split between the measuring threads during the export only


@pytest.mark.slow
def test_quantized_perplexity_stays_near_f16(tmp_path):
    """tunewise-tiny as f16, q8_0 and q4_k_m: q8_0 within 1 % of f16's held-out perplexity, q4_k_m within 10 %."""
    ppl = {}
    for gguf_type in ("f16", "q8_0", "q4_k_m"):
        out = tmp_path / gguf_type
        assert run_cli("export", "--model", "tunewise-tiny", "--quant_method", "gguf", "--gguf_type", gguf_type,
                       "--output_dir", out) == 0
        info = export_json(out)
        ppl[gguf_type] = info["checks"]["perplexity"]["gguf"]
        assert info["checks"]["logits"]["finite"]
    assert ppl["q8_0"] / ppl["f16"] < 1.01
    assert ppl["q4_k_m"] / ppl["f16"] < 1.10


@pytest.mark.parametrize("flags, message", [
    (["--quant_method", "int3"], "--quant_method int3: expected one of gguf, bnb"),
    (["--quant_method", "gguf", "--gguf_type", "q3_k"], "--gguf_type q3_k: expected one of f16, q8_0, q4_k_m"),
    (["--to_ollama", "true"], "--to_ollama true writes a Modelfile for a GGUF file"),
    (["--quant_method", "bnb"], "--quant_method bnb needs --quant_bits 4 or 8"),
    (["--quant_method", "gguf", "--quant_bits", "4"], "--quant_bits is for --quant_method bnb"),
])
def test_bad_flags(flags, message, tmp_path, capsys):
    assert run_cli("export", "--model", "tunewise-tiny", *flags, "--output_dir", tmp_path / "out") == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("method, why", [
    ("gptq", "GPTQModel, which PyPI has as source only"),
    ("awq", "AutoAWQ, which its authors have deprecated"),
])
def test_gptq_and_awq_are_refused_with_the_reason(method, why, tmp_path, capsys):
    """ms-swift's --quant_method gptq|awq: refused in one paragraph saying why and what to use instead."""
    assert run_cli("export", "--model", "tunewise-tiny", "--quant_method", method, "--quant_bits", "4",
                   "--output_dir", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert f"--quant_method {method}: not available in tunewise." in err and why in err
    assert "--quant_method gguf --gguf_type q4_k_m" in err and "--quant_method bnb --quant_bits 4" in err
    assert "expected one of" not in err and "Traceback" not in err and "\n\n" not in err.strip()
    assert not (tmp_path / "out").exists()


def test_an_unmapped_family_is_refused_before_anything_is_written(tmp_path, capsys):
    from transformers import LlamaConfig, LlamaForCausalLM

    from tunewise.models.load import load_tokenizer, resolve_model

    model_dir = tmp_path / "llama"
    LlamaForCausalLM(LlamaConfig(vocab_size=6144, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1)).save_pretrained(model_dir)
    load_tokenizer(resolve_model("tunewise-tiny")).save_pretrained(model_dir)
    out = tmp_path / "out"
    assert run_cli("export", "--model", model_dir, "--quant_method", "gguf", "--output_dir", out) == 2
    err = capsys.readouterr().err
    assert ("a LlamaForCausalLM model; the GGUF writer maps Qwen2ForCausalLM (Qwen2/Qwen2.5 and tunewise-tiny) and "
            "Qwen3ForCausalLM (dense Qwen3) only") in err
    assert "Traceback" not in err and not out.exists() and no_temporaries(tmp_path)


def test_gguf_not_installed_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "gguf", None)  # `import gguf` raises ImportError
    assert run_cli("export", "--model", "tunewise-tiny", "--quant_method", "gguf", "--output_dir",
                   tmp_path / "out") == 2
    assert "needs the gguf package" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_an_output_folder_holding_a_run_is_not_touched(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "args.json").write_text('{"args": {"model": "tunewise-tiny"}}')
    assert run_cli("export", "--model", "tunewise-tiny", "--quant_method", "gguf", "--output_dir", run,
                   "--overwrite", "true") == 2
    assert "holds a training run" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == ["args.json"]


@pytest.mark.parametrize("fault, message", [
    ("nan", "its logits are not finite"),
    ("scaled", "held-out perplexity is"),
])
def test_a_broken_export_is_not_published(fault, message, tmp_path, capsys, monkeypatch):
    """Fault injection: the encoder corrupts one tensor (layer 0's query weights: NaN, or tripled), as a broken
    writer would; the read-back checks must refuse the file, and nothing is left."""
    import numpy as np

    import tunewise.export.ggml_quants as quants

    encode = quants.encode
    seen = []

    def corrupting(array, qtype):
        seen.append(array.shape)
        if len(seen) == 2:  # the second tensor written: blk.0.attn_q.weight
            return np.full_like(array, np.nan) if fault == "nan" else array * 3.0
        return encode(array, qtype)

    monkeypatch.setattr(quants, "encode", corrupting)
    out = tmp_path / "out"
    assert run_cli("export", "--model", "tunewise-tiny", "--quant_method", "gguf", "--gguf_type", "f16",
                   "--output_dir", out) == 2
    err = capsys.readouterr().err
    assert "the export is broken, so nothing was written" in err and message in err
    assert not out.exists() and no_temporaries(tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("gguf_type", ["f16", "q8_0", "q4_k_m"])
def test_the_demo_fine_tune_answers_the_same_from_its_gguf(identity_run, tmp_path, gguf_type):
    """The demo's identity fine-tune (tests/conftest.py identity_run) as a GGUF answers the demo's three questions
    as the adapter does, greedily."""
    out = tmp_path / gguf_type
    assert run_cli("export", "--adapters", identity_run / "last", "--quant_method", "gguf", "--gguf_type", gguf_type,
                   "--to_ollama", "true", "--output_dir", out) == 0
    answers = export_json(out)["checks"]["answers"]
    assert [a["question"] for a in answers] == ["你是谁？", "Who are you?", "12+34=?"]
    assert "小黄" in answers[0]["source"] and "Xiao Huang" in answers[1]["source"]
    assert [a["gguf"] for a in answers] == [a["source"] for a in answers]


def test_a_gguf_whose_tokenizer_differs_is_not_published(tmp_path, capsys, monkeypatch):
    """Fault injection: the file's chat template loses its generation prompt; the read-back tokenizer renders the
    probe prompts to other ids, so the export is refused."""
    import tunewise.export.gguf_file as gguf_file

    metadata = gguf_file.tokenizer_metadata

    def altered(*args, **kwargs):
        meta = metadata(*args, **kwargs)
        return {**meta, "chat_template": meta["chat_template"].replace("<|im_start|>assistant\\n", "")}

    monkeypatch.setattr(gguf_file, "tokenizer_metadata", altered)
    out = tmp_path / "out"
    assert run_cli("export", "--model", "tunewise-tiny", "--quant_method", "gguf", "--output_dir", out) == 2
    err = capsys.readouterr().err
    assert "its tokenizer differs from the source's (chat template: no)" in err
    assert "(probe prompt ids: no)" in err and not out.exists() and no_temporaries(tmp_path)
