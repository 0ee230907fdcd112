"""QLoRA in the plan: the memory estimate of 4- and 8-bit base weights (tunewise.plan.memory), the plan's dtype line,
and what the plan and training say where bitsandbytes cannot run or the sharding cannot hold quantized weights."""
import json
import sys

import pytest
import torch

from cli_runs import run_cli
from tunewise.args import SftArgs
from tunewise.errors import UserError
from tunewise.flags import parse
from tunewise.models.load import resolve_model
from tunewise.plan.memory import (ModelShape, estimate_memory, format_memory, linear_parameters, lora_parameters,
                                  quantized_weight_bytes)
from tunewise.plan.resolve import resolve
from tunewise.recipes.sft import RECIPE as SFT

MODEL = resolve_model("tunewise-tiny")
QWEN25_7B = {"model_type": "qwen2", "hidden_size": 3584, "num_hidden_layers": 28, "num_attention_heads": 28,
             "num_key_value_heads": 4, "intermediate_size": 18944, "vocab_size": 152064,
             "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
DATA = ["--dataset", "self_cognition#8", "--model_name", "N", "--model_author", "A"]


def stored_bytes(model) -> int:
    """What bitsandbytes holds for the decoder's linear weights: the packed weights and their quantization state."""
    total = 0
    for name, module in model.named_modules():
        if type(module).__name__ == "Linear4bit":
            state = module.weight.quant_state
            total += module.weight.numel() * module.weight.element_size()
            total += state.absmax.numel() * state.absmax.element_size()
            if state.nested:
                total += state.state2.absmax.numel() * state.state2.absmax.element_size()
        elif type(module).__name__ == "Linear8bitLt":
            total += module.weight.numel() + module.weight.SCB.numel() * module.weight.SCB.element_size()
    return total


@pytest.mark.parametrize("bits, double_quant", [(4, False), (4, True), (8, False)])
def test_quantized_bytes_are_what_bitsandbytes_holds(bits, double_quant):
    from tunewise.models.load import load_model
    from tunewise.models.quantization import Quantization

    model = load_model(MODEL, "float32", quantization=Quantization(bits, "nf4", double_quant))
    assert quantized_weight_bytes(ModelShape.from_config(MODEL), bits, double_quant) == stored_bytes(model)


def test_qlora_on_qwen25_7b_by_hand():
    shape = ModelShape.from_config(QWEN25_7B)
    params, linear, lora = shape.parameters(), linear_parameters(shape), lora_parameters(shape, 8)
    assert linear == 28 * (2 * 3584 * 3584 + 2 * 3584 * 512 + 3 * 3584 * 18944) == 6_525_288_448
    four = estimate_memory(QWEN25_7B, "lora", seq_len=2048, quant_bits=4, gradient_checkpointing=True,
                           capacity="16GiB")
    # 4-bit linears (~0.516 bytes each with double quant), the rest in float32 (peft's prepare_model_for_kbit_training)
    assert four.parts["weights"] == quantized_weight_bytes(shape, 4) + (params - linear) * 4 + lora * 4
    assert 0.51 < quantized_weight_bytes(shape, 4) / linear < 0.52
    assert four.parts["dequantized"] == 3584 * 18944 * 2  # one MLP weight in bf16 at a time
    eight = estimate_memory(QWEN25_7B, "lora", seq_len=2048, quant_bits=8, gradient_checkpointing=True)
    plain = estimate_memory(QWEN25_7B, "lora", seq_len=2048, gradient_checkpointing=True, capacity="16GiB")
    assert four.parts["weights"] < eight.parts["weights"] < plain.parts["weights"]
    assert four.fits and not plain.fits  # 13.8 against 20.7 GiB: QLoRA puts 7B on a 16 GiB card
    assert "base linear weights in bitsandbytes 4-bit" in format_memory(four)
    inference = estimate_memory(QWEN25_7B, "inference", seq_len=1, quant_bits=4)
    assert inference.parts["weights"] == quantized_weight_bytes(shape, 4) + (params - linear) * 2
    with pytest.raises(UserError, match="quant_bits 4: 4 or 8, for LoRA training or inference"):
        estimate_memory(QWEN25_7B, "full", quant_bits=4)


def test_the_plan_says_it_on_the_dtype_line_and_sizes_a_gpu_run(tmp_path, capsys):
    out = tmp_path / "plan"
    assert run_cli("plan", *DATA, "--quant_bits", "4", "--bnb_4bit_quant_type", "fp4", "--gpu_memory", "24GiB",
                   "--output_dir", out) == 0
    text = capsys.readouterr().out
    assert "dtype      float32; base linear layers in bitsandbytes fp4 4-bit (double quant), computed in float32" in text
    record = json.loads((out / "plan.json").read_text())["extra"]
    assert record["device"]["quantization"] == "bitsandbytes fp4 4-bit (double quant), computed in float32"
    assert record["memory"]["parts"]["dequantized"] > 0 and record["memory"]["capacity"] == 24 * 2**30


def test_without_bitsandbytes_the_plan_notes_it_and_training_refuses(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # what `import bitsandbytes` meets when it is absent
    assert run_cli("plan", *DATA, "--quant_bits", "8", "--output_dir", tmp_path / "plan") == 0
    assert "note: --quant_bits 8 cannot train on this machine: the bitsandbytes package is not installed" in \
        capsys.readouterr().out
    run = tmp_path / "run"
    assert run_cli("sft", *DATA, "--quant_bits", "8", "--output_dir", run) == 2
    err = capsys.readouterr().err
    assert "--quant_bits 8: the bitsandbytes package is not installed" in err and "tunewise[quant]" in err
    assert not run.exists()  # refused before anything is written


def test_a_deepspeed_json_of_zero3_is_refused(tmp_path):
    pytest.importorskip("deepspeed")
    config = tmp_path / "ds.json"
    config.write_text(json.dumps({"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": "auto"}))
    args, sources, _ = parse(SftArgs, [*DATA, "--quant_bits", "4", "--deepspeed", str(config)])
    with pytest.raises(UserError, match=f"--quant_bits 4 with --deepspeed {config}: its ZeRO stage 3"):
        resolve(SFT, args, sources)
