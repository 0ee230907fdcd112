"""QLoRA runs: `tunewise sft` and `tunewise dpo` with --quant_bits train LoRA adapters on a bitsandbytes base, on this
CPU, through the evaluations between steps; the adapter then answers on the unquantized base (infer)."""
import json
import math

import pytest

from cli_runs import IDENTITY, read_log, run_cli


@pytest.mark.slow
def test_sft_on_a_4bit_base_trains_evaluates_and_answers(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli("sft", "--dataset", "self_cognition#24", *IDENTITY, "--quant_bits", "4", "--max_steps", 6,
                   "--split_dataset_ratio", 0.2, "--eval_steps", 3, "--save_steps", 3, "--logging_steps", 1,
                   "--report_to", "none", "--output_dir", out, "--add_version", "false") == 0
    assert "base linear layers in bitsandbytes nf4 4-bit (double quant)" in capsys.readouterr().out
    saved = json.loads((out / "args.json").read_text())["args"]
    assert saved["quant_bits"] == 4 and saved["bnb_4bit_quant_type"] == "nf4"
    log = read_log(out)
    losses = [row["loss"] for row in log if "loss" in row]
    evals = [row["eval_loss"] for row in log if "eval_loss" in row]
    assert len(losses) == 6 and all(math.isfinite(x) for x in losses) and len(evals) == 2
    assert evals[1] < evals[0]  # the adapter learns on the quantized base after an evaluation
    from safetensors.torch import load_file

    weights = load_file(out / "last" / "adapter_model.safetensors")
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in weights.items())  # B starts at zero
    assert run_cli("infer", "--adapters", out / "last", "--query", "Who are you?", "--max_new_tokens", 24,
                   "--stream", "false") == 0
    assert capsys.readouterr().out.strip()


@pytest.mark.slow
def test_dpo_on_an_8bit_base(tmp_path, capsys):
    out = tmp_path / "dpo"
    assert run_cli("dpo", "--dataset", "concise#8", "--quant_bits", "8", "--max_steps", 3, "--logging_steps", 1,
                   "--learning_rate", 5e-3, "--save_steps", 3, "--report_to", "none", "--output_dir", out,
                   "--add_version", "false") == 0
    text = capsys.readouterr().out
    assert "LLM.int8 8-bit" in text and "DPOTrainer keeps the LoRA weights of a quantized model in bfloat16" in text
    log = read_log(out)
    assert all(math.isfinite(row["loss"]) for row in log if "loss" in row)
    margins = [row["rewards/margins"] for row in log if "rewards/margins" in row]
    assert len(margins) == 3 and margins[0] == 0 and margins[-1] != 0  # the policy moved away from its reference
    assert (out / "last" / "adapter_model.safetensors").is_file()


def test_full_training_on_a_quantized_base_is_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli("sft", "--dataset", "self_cognition#8", *IDENTITY, "--quant_bits", "4", "--train_type", "full",
                   "--output_dir", out) == 2
    assert "--quant_bits 4 with --train_type full" in capsys.readouterr().err and not out.exists()
