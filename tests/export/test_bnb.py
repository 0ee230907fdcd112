"""`tunewise export --quant_method bnb`: write_bnb writes a bitsandbytes checkpoint that loads with
AutoModelForCausalLM.from_pretrained alone and checks it against the unquantized model; a broken one is refused."""
import json
import sys

import pytest
import torch

from cli_runs import run_cli
from tunewise.errors import UserError
from tunewise.export.bnb import PERPLEXITY_BOUND, compare, write_bnb
from tunewise.models.load import load_model, load_tokenizer, resolve_model

MODEL = resolve_model("tunewise-tiny")


@pytest.fixture(scope="module", params=[4, 8])
def written(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"bnb{request.param}") / "out"
    out.mkdir()
    return request.param, out, write_bnb(MODEL, out, request.param)


def test_it_loads_with_transformers_alone(written):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    bits, out, _ = written
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "bitsandbytes" and config[f"load_in_{bits}bit"]
    if bits == 4:
        assert config["bnb_4bit_quant_type"] == "nf4" and config["bnb_4bit_use_double_quant"]
    model = AutoModelForCausalLM.from_pretrained(out)
    layer = {4: "Linear4bit", 8: "Linear8bitLt"}[bits]
    assert type(model.model.layers[0].mlp.down_proj).__name__ == layer
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert "<|im_start|>" in tokenizer.chat_template
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=torch.tensor([[1, 2, 3]])).logits).all()


def test_its_checks(written):
    bits, out, checks = written
    assert checks["quant_bits"] == bits and checks["heldout_rows"] == 84 and checks["heldout_tokens"] > 500
    # measured on the embedded model (benchmarks/QUANT.md): ratio 0.998 (nf4) and 1.000 (int8); logits differences
    # 1.42 (nf4) and 0.21 (int8) against logits up to 19.7. Deterministic: no seed enters quantization.
    assert 0.9 < checks["perplexity_ratio"] <= PERPLEXITY_BOUND[bits]
    assert 0 < checks["max_abs_logits_diff"] < {4: 3.0, 8: 0.6}[bits]
    assert [p["question"] for p in checks["probes"]][:2] == ["Who are you?", "你是谁？"]
    assert "TinyWise" in checks["probes"][0]["quantized"]  # the identity survives quantization
    assert checks["weights_bytes"] < {4: 0.5, 8: 0.6}[bits] * checks["unquantized_weights_bytes"]


def test_a_checkpoint_saved_after_a_cpu_forward_is_refused(tmp_path):
    """bitsandbytes 0.50 repacks 4-bit weights on a CPU's first eval forward and saves them corrupted: the checks
    must catch a broken file (this is why write_bnb saves before any forward)."""
    from transformers import AutoModelForCausalLM

    from tunewise.models.quantization import Quantization, bnb_config

    tokenizer = load_tokenizer(MODEL)
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32,
                                                 quantization_config=bnb_config(Quantization(4, "nf4", False), None))
    with torch.no_grad():
        model(input_ids=torch.tensor([[1, 2, 3]]))
    model.save_pretrained(tmp_path)
    broken = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with pytest.raises(UserError, match="held-out perplexity .* past the bound"):
        compare(load_model(MODEL).eval(), broken, tokenizer, 4)


def test_a_missing_bitsandbytes_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    with pytest.raises(UserError, match="--quant_bits 4: the bitsandbytes package is not installed"):
        write_bnb(MODEL, tmp_path, 4)
    assert list(tmp_path.iterdir()) == []


def test_an_already_quantized_model_is_refused(written, tmp_path):
    _, out, _ = written
    with pytest.raises(UserError, match="already quantized"):
        write_bnb(out, tmp_path, 4)


def lora_checkpoint(run_dir):
    """A LoRA checkpoint as `tunewise sft` leaves it (args.json beside checkpoint-1/), peft's random (not zero)
    initialisation: it changes the answers a little, as a short fine-tune does (held-out perplexity 1.388 against
    the base model's 1.330)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(load_model(MODEL), LoraConfig(r=8, lora_alpha=16, target_modules="all-linear",
                                                         init_lora_weights=False, task_type="CAUSAL_LM"))
    ckpt = run_dir / "checkpoint-1"
    model.save_pretrained(ckpt)
    (run_dir / "args.json").write_text(json.dumps({"command": "sft", "args": {"model": "tunewise-tiny", "system": None}}))
    return ckpt


@pytest.mark.slow
def test_the_cli_exports_an_adapter_and_infer_answers_from_it(tmp_path, capsys):
    adapter = lora_checkpoint(tmp_path / "run")
    out = tmp_path / "int8"
    assert run_cli("export", "--adapters", adapter, "--quant_method", "bnb", "--quant_bits", "8",
                   "--output_dir", out) == 0
    record = json.loads((out / "export.json").read_text())
    checks = record["checks"]
    assert record["source"]["adapter"] == str(adapter) and checks["perplexity_ratio"] <= PERPLEXITY_BOUND[8]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    printed = capsys.readouterr().out
    assert f"bnb export written to {out}" in printed and "LLM.int8 8-bit: held-out perplexity" in printed
    assert run_cli("export", "--adapters", adapter, "--quant_method", "bnb", "--quant_bits", "8",
                   "--output_dir", out) == 2  # exists: refused without --overwrite
    assert run_cli("infer", "--model", out, "--query", "Who are you?", "--max_new_tokens", "16",
                   "--stream", "false") == 0
    assert checks["probes"][0]["quantized"].strip() in capsys.readouterr().out
