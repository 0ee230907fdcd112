"""GRPO's memory plan (tunewise.plan.grpo_memory): its parts worked by hand for a small config, the plan's GRPO block,
the refusal of a run that would not fit (exit 2, nothing written), and the estimate against the peak a real CPU run
reaches (benchmarks/grpo_memory.py)."""
import json
import re
import sys
from pathlib import Path

import pytest

from cli_runs import run_cli
from tunewise.plan.grpo_memory import GrpoSettings, estimate_grpo_memory, format_grpo_memory, vllm_problem

# 2 layers, hidden 64, 4 query heads of 16, 2 KV heads (kv_dim 32), MLP 128, vocabulary 1,000, tied embeddings
SMALL = {"model_type": "qwen2", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 1000, "tie_word_embeddings": True,
         "torch_dtype": "float32"}
# per layer: q 64x64 + k, v 64x32 + o 64x64 + gate, up 64x128 + down 128x64 = 36,864; norms 128; q, k, v biases 128
PARAMETERS = 2 * (36_864 + 128 + 128) + 1000 * 64 + 64
ROUND = dict(generation_batch=8, batch_size=4, prompt_length=10, completion_length=20)  # 30 tokens a sequence


def settings(**changes) -> GrpoSettings:
    return GrpoSettings(**{"train_type": "full", "weight_dtype": "float32", **ROUND, **changes})


def test_the_parts_by_hand():
    est = estimate_grpo_memory(SMALL, settings(device="cuda"))
    assert est.parameters == PARAMETERS == 138_304
    assert est.parts["policy"] == PARAMETERS * 4
    assert est.parts["reference"] == PARAMETERS * 4  # full training with beta 0.04: TRL loads a second copy
    assert est.parts["optimizer"] == PARAMETERS * 2 * 4  # AdamW's two float32 states
    generation = est.phases["generation"]
    # KV cache: 2 layers x (k, v) x 32 values x 8 completions x 30 tokens x 4 bytes
    assert generation["kv_cache"] == 2 * 2 * 32 * 8 * 30 * 4 == 122_880
    # the prefill's one-layer working set (8 x 10 prompt tokens x (2 x 64 + 2 x 32 + 3 x 128) floats) outweighs a
    # decoding step's logits (8 x 1,000 floats, 4 copies)
    assert generation["prefill_layer"] == 8 * 10 * (2 * 64 + 2 * 32 + 3 * 128) * 4 == 184_320 > 8 * 1000 * 4 * 4
    loss = est.phases["loss"]
    assert loss["gradients"] == PARAMETERS * 4
    # TRL's fused output layer on a GPU: the 4 x 20 completion tokens, one float32 tile of 80 x 1,000 logits, their
    # hidden states and float32 gradient (the output layer's own gradient is among the gradients)
    assert loss["loss_logits"] == 80 * 1000 * 4 + 80 * 64 * (4 + 4) == 360_960
    # in bf16, a bf16 tile, and the float32 gradient the output layer accumulates before it is cast to bf16
    bf16 = estimate_grpo_memory(SMALL, settings(device="cuda", weight_dtype="bfloat16"))
    assert bf16.phases["loss"]["loss_logits"] == 80 * 1000 * 2 + 80 * 64 * (2 + 4) + 1000 * 64 * 4
    assert bf16.parts["reference"] == PARAMETERS * 2
    # on a CPU it scores every position (4 x 29) and holds 9.5 float32 tiles in its backward pass
    cpu = estimate_grpo_memory(SMALL, settings(device="cpu"))
    assert cpu.phases["loss"]["loss_logits"] == int(9.5 * 116 * 1000 * 4) + 116 * 64 * 8
    assert cpu.parts["process"] > 0 and "process" not in est.parts
    # the peak: what is held throughout plus the larger phase
    assert est.peak_phase == "loss"
    assert est.total == sum(est.parts.values()) + sum(loss.values())


def test_what_the_reference_costs():
    assert estimate_grpo_memory(SMALL, settings(beta=0.0)).parts["reference"] == 0  # no KL term: none loaded
    lora = estimate_grpo_memory(SMALL, settings(train_type="lora"))
    assert lora.parts["reference"] == 0  # the policy with its adapter disabled
    assert any("adapter disabled" in n for n in lora.notes)
    assert lora.phases["loss"]["loss_logits"] == 80 * 1000 * 4 + 80 * 64 * 8  # the output layer does not train


def test_generation_dominates_a_large_round_and_scales_with_it():
    small = estimate_grpo_memory(SMALL, settings(generation_batch=4, batch_size=4, completion_length=64))
    large = estimate_grpo_memory(SMALL, settings(generation_batch=4096, batch_size=4, completion_length=64))
    assert large.phases["generation"]["kv_cache"] == 1024 * small.phases["generation"]["kv_cache"]
    assert large.peak_phase == "generation" and small.peak_phase == "loss"


def test_vllm_colocated_takes_its_share_instead_of_the_cache():
    est = estimate_grpo_memory(SMALL, settings(use_vllm=True, vllm_gpu_memory_utilization=0.5), capacity="2GiB")
    assert est.parts["vllm_share"] == 2 ** 30
    assert est.phases["generation"] == {}
    assert est.parts["overhead"] == 2 ** 30  # a GPU's context and allocator slack
    server = estimate_grpo_memory(SMALL, settings(use_vllm=True, vllm_mode="server"), capacity="2GiB")
    assert "vllm_share" not in server.parts and server.phases["generation"] == {}
    # a share too small for vLLM's copy of the weights is a problem of its own
    assert vllm_problem(SMALL, settings(use_vllm=True, vllm_gpu_memory_utilization=0.0001), 2 ** 30)
    assert vllm_problem(SMALL, settings(use_vllm=True, vllm_gpu_memory_utilization=0.5), 2 ** 30) is None


def test_the_block_names_every_part():
    text = format_grpo_memory(estimate_grpo_memory(SMALL, settings(device="cuda"), capacity="2GiB"))
    for word in ("policy", "reference", "kv_cache", "loss_logits", "generation (8 completions x (10 prompt + 20 "
                 "completion tokens))", "fits in 2.00 GiB"):
        assert word in text, text


# ---------------------------------------------------------------------------------------------------------------
GRPO = ["--rlhf_type", "grpo", "--dataset", "additions#16", "--reward_funcs", "accuracy", "--num_generations", "4",
        "--per_device_train_batch_size", "8", "--gradient_accumulation_steps", "1", "--model_name", "N",
        "--model_author", "A", "--report_to", "none"]


def test_the_plan_prints_and_writes_the_grpo_block(tmp_path, capsys):
    out = tmp_path / "plan"
    assert run_cli("plan", *GRPO, "--max_completion_length", "32", "--output_dir", out) == 0
    text = capsys.readouterr().out
    assert "GRPO memory estimate" in text and "kv_cache" in text and "this machine's available memory" in text
    memory = json.loads((out / "plan.json").read_text())["extra"]["memory"]
    assert memory["settings"]["generation_batch"] == 8 and memory["settings"]["completion_length"] == 32
    assert memory["phases"]["generation"]["kv_cache"] == 4 * 2 * 64 * 8 * (memory["settings"]["prompt_length"] + 32) * 4
    assert memory["fits"] is True


def test_a_run_that_does_not_fit_this_machine_stops_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "run"
    # a million completion tokens: the loss pass's activations alone would take terabytes
    assert run_cli("rlhf", *GRPO, "--max_completion_length", "1000000", "--output_dir", out) == 2
    err = capsys.readouterr().err
    assert "would run out of memory" in err and "this machine's available memory" in err
    assert "--max_completion_length 500000" in err and "--gradient_checkpointing true" in err
    assert not out.exists()


def test_a_gpu_plan_that_does_not_fit_says_what_would(tmp_path, capsys):
    out = tmp_path / "plan"
    assert run_cli("plan", *GRPO, "--train_type", "full", "--max_completion_length", "8192", "--gpu_memory", "5GiB",
                   "--output_dir", out) == 2
    err = capsys.readouterr().err
    assert "would run out of memory" in err and "the GPU (--gpu_memory) holds 5.00 GiB" in err
    assert "--beta 0 (no reference copy)" in err and "--use_vllm true" in err and "--train_type lora" in err
    assert re.search(r"--max_completion_length 4096: [\d.]+ GiB \(fits\)", err)  # halving it is enough, and it says so
    assert "--num_generations changes nothing here" in err  # TRL's batches count completions
    assert not out.exists()


# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_grpo_memory_estimate_within_20_percent_of_a_real_cpu_run():
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import grpo_memory

    marks = grpo_memory.measure("lora-g4-c64")
    row = grpo_memory.row("lora-g4-c64", marks)
    print(row)
    assert row["peak_phase"] == "loss"
    assert 0.8 <= row["ratio"] <= 1.2, row  # the whole process (the plan counts it on a CPU)
    # what the run adds to the process, the process itself aside: measured 0.88 (2026-12-05)
    assert 0.8 <= row["added_estimate"] / row["added_measured"] <= 1.2, row
