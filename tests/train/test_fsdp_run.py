"""`--fsdp` end to end: resolved and refused before anything is written, shown by `tunewise plan`, and, on 2 CPU
processes (gloo), the same training as one process with gradient accumulation 2.

FSDP on CPU: accelerate 1.15 alone drops the FSDP plugin on CPU processes and trains DDP (tunewise.train.fsdp says
where); tunewise builds the state that selects FSDP, and check_active refuses a Trainer that did not enable it.

Measured against one process (3 steps, 2026-12-02, AMD EPYC; ATEN_CPU_CAPABILITY avx512 / avx2 / default):
* LoRA, lr 1e-3: step 1 equal, steps 2-3 within 5.5e-4 relative on all three kinds, adapter within 3.9e-3 (mean
  1.9e-4): the DDP numbers of test_data_parallel.py (Adam turns float noise in near-zero gradients into updates of
  +-lr); on avx512 the FSDP losses and adapter equal a plain DDP run's bit for bit.
* full, lr 1e-4: losses within 1.1e-7 / 1.2e-7 / 1.1e-7 relative, weights within 1.3e-6 / 5.5e-7 / 1.0e-6.
* DPO LoRA: losses equal, adapter within 0 / 3.7e-9 / 0 (with a warm-up step, not this test's: 4.4e-7 and 2.3e-6).
"""
import json
import re
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from cli_runs import read_log, run_cli
from tunewise.args import DpoArgs, SftArgs
from tunewise.errors import UserError
from tunewise.flags import parse
from tunewise.recipes.dpo import RECIPE as DPO
from tunewise.plan.resolve import resolve
from tunewise.recipes.sft import RECIPE as SFT

BASE = ["--dataset", "self_cognition#16", "--model_name", "N", "--model_author", "A"]
FSDP = ["--fsdp", "full_shard auto_wrap", "--nproc_per_node", "2"]
ENGINE = "FSDP full shard (auto-wrap Qwen2DecoderLayer)"


def resolved(*argv, recipe=SFT, cls=SftArgs):
    args, sources, _ = parse(cls, [str(a) for a in argv])
    return resolve(recipe, args, sources)


# ---------------------------------------------------------------- resolved before launch
def test_a_run_with_fsdp_is_planned_with_the_models_decoder_layer(tmp_path):
    run = resolved(*BASE, *FSDP, "--output_dir", tmp_path / "out")
    assert run.engine == ENGINE and run.step_plan.world_size == 2
    assert run.fsdp.config["transformer_layer_cls_to_wrap"] == ["Qwen2DecoderLayer"]
    assert run.fsdp.config["state_dict_type"] == "FULL_STATE_DICT" and not (tmp_path / "out").exists()
    assert resolved(*BASE, "--fsdp", "--nproc_per_node", 2).engine == ENGINE  # bare --fsdp, as transformers
    assert resolved(*BASE, *FSDP, "--nnodes", 2).engine == ENGINE + " on 2 nodes"


def test_fsdp_checkpointing_goes_by_the_dropout_the_trainer_keeps():
    config = ["--fsdp_config", '{"activation_checkpointing": true}']
    with pytest.raises(UserError, match="dropout active \\(lora_dropout 0.05\\)"):
        resolved(*BASE, *FSDP, *config)
    run = resolved(*BASE, *FSDP, *config, "--lora_dropout", 0)
    assert run.args.gradient_checkpointing and run.sources["gradient_checkpointing"] == "fsdp_config"
    assert not run.fsdp.model_checkpointing
    dpo = resolved("--dataset", "concise#4", *FSDP, *config, recipe=DPO, cls=DpoArgs)  # DPOConfig disables dropout
    assert dpo.fsdp.config["activation_checkpointing"] and dpo.args.gradient_checkpointing
    own = resolved(*BASE, *FSDP, "--gradient_checkpointing", "true")
    assert own.fsdp.model_checkpointing and any("the model's own" in note for note in own.notes)


@pytest.mark.parametrize("extra, message", [
    (["--fsdp_config", "CONFIG", "--gradient_checkpointing", "true"],
     "CONFIG contradicts the flags or cannot be honoured: activation_checkpointing = false but "
     "--gradient_checkpointing true (flag) says the opposite"),
    (["--nproc_per_node", "1"], "with one process"),
    (["--deepspeed", "zero2"], "two sharding engines"),
    (["--fsdp_config", '{"state_dict_type": "SHARDED_STATE_DICT"}'], "tunewise needs FULL_STATE_DICT"),
])
def test_a_bad_combination_exits_2_and_writes_no_run_directory(tmp_path, capsys, extra, message):
    config = tmp_path / "fsdp.json"
    config.write_text(json.dumps({"activation_checkpointing": False}))
    extra = [str(config) if e == "CONFIG" else e for e in extra]
    out = tmp_path / "out"
    assert run_cli("sft", *BASE, *FSDP, *extra, "--output_dir", out) == 2
    assert message.replace("CONFIG", str(config)) in capsys.readouterr().err
    assert not out.exists()


def test_plan_shows_the_engine_the_world_size_and_the_global_batch(tmp_path, capsys):
    assert run_cli("plan", *BASE, *FSDP, "--per_device_train_batch_size", 2, "--gradient_accumulation_steps", 3,
                   "--output_dir", tmp_path) == 0
    cells = [re.split(r" {2,}", line.strip()) for line in capsys.readouterr().out.splitlines() if line.startswith("  ")]
    rows = {row[0]: row[1:] for row in cells if len(row) > 1}  # label: [value, source if any]
    assert rows["world size"] == ["2", "flag"] and rows["global batch"] == ["12"]
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["extra"]["engine"] == ENGINE
    assert plan["steps"]["world_size"] == 2 and plan["steps"]["global_batch_size"] == 12


def test_a_trainer_without_fsdp_is_refused_for_an_fsdp_run(tmp_path):
    """What check_active guards against: accelerate making a non-FSDP Trainer for a run that asked for FSDP."""
    from transformers import Trainer, TrainingArguments

    from tunewise.models.load import load_model
    from tunewise.train.fsdp import check_active

    run = resolved(*BASE, *FSDP)
    trainer = Trainer(model=load_model(run.model_dir), args=TrainingArguments(str(tmp_path), use_cpu=True,
                                                                               report_to=[]))
    with pytest.raises(UserError, match="accelerate did not enable FSDP"):
        check_active(trainer, run)
    check_active(trainer, resolved(*BASE))  # no --fsdp: nothing to check


# ---------------------------------------------------------------- training: 2 FSDP processes = 1 process x accumulation 2
STEPS = ["--max_steps", "3", "--logging_steps", "1", "--save_steps", "3", "--warmup_steps", "0", "--report_to", "none",
         "--add_version", "false", "--per_device_train_batch_size", "1"]
PAIRS = ["--dataset", "concise#16"]


def train(out, command, *extra):
    proc = subprocess.run([sys.executable, "-m", "tunewise.cli", command, *STEPS, "--output_dir", str(out), *extra],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc, [r["loss"] for r in read_log(out) if "loss" in r]


def pair(tmp_path, command, weights, port, *extra):
    """(one-process losses, FSDP losses, one-process weights, FSDP weights, FSDP's checkpoint)."""
    _, one_losses = train(tmp_path / "one", command, "--gradient_accumulation_steps", "2", *extra)
    proc, fsdp_losses = train(tmp_path / "fsdp", command, "--gradient_accumulation_steps", "1", *FSDP,
                              "--master_port", str(port), *extra)
    ckpt = tmp_path / "fsdp" / "checkpoint-3"
    assert ENGINE in proc.stdout
    assert "DistributedDataParallel" not in proc.stdout + proc.stderr  # the DDP reducer's warnings: not DDP
    assert (ckpt / "pytorch_model_fsdp.bin").is_file()  # FSDP's own resume state (DDP writes optimizer.pt)
    assert fsdp_losses[0] == pytest.approx(one_losses[0], rel=1e-6)
    return one_losses, fsdp_losses, load_file(tmp_path / "one" / "checkpoint-3" / weights), \
        load_file(ckpt / weights), ckpt


def max_diff(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in a)


def answers(ckpt):
    """`tunewise infer` reads the checkpoint FSDP wrote: a plain adapter or model, not per-rank shards."""
    assert run_cli("infer", "--adapters", ckpt, "--query", "Who are you?", "--temperature", 0,
                   "--max_new_tokens", 8) == 0


@pytest.mark.slow
def test_lora_under_fsdp_on_two_processes_equals_one_process(tmp_path):
    one_losses, fsdp_losses, one, fsdp, ckpt = pair(tmp_path, "sft", "adapter_model.safetensors", 29681, *BASE,
                                                    "--learning_rate", "1e-3")
    assert fsdp_losses == pytest.approx(one_losses, rel=2e-3)  # measured 5.5e-4 (step 3), as DDP
    assert sorted(fsdp) == sorted(one) and max_diff(fsdp, one) < 2e-2  # measured 3.9e-3, as DDP
    assert json.loads((ckpt / "adapter_config.json").read_text())["peft_type"] == "LORA"
    answers(ckpt)


@pytest.mark.slow
def test_full_training_under_fsdp_on_two_processes_equals_one_process(tmp_path):
    one_losses, fsdp_losses, one, fsdp, ckpt = pair(tmp_path, "sft", "model.safetensors", 29682, *BASE,
                                                    "--train_type", "full", "--learning_rate", "1e-4")
    assert fsdp_losses == pytest.approx(one_losses, rel=1e-6)  # measured 1.1e-7
    # FSDP's full state dict also holds the tied lm_head (equal to the embeddings); the model loads tied as before
    assert set(fsdp) - set(one) <= {"lm_head.weight"} and set(one) <= set(fsdp)
    if "lm_head.weight" in fsdp:
        assert fsdp["lm_head.weight"].equal(fsdp["model.embed_tokens.weight"])
    # measured 1.3e-6 (avx512) when both ran the model's own loss; with --chunked_loss (the default) the one process
    # runs the output layer outside the model in chunks and FSDP inside it at the trained positions (the sharded
    # head, tunewise.train.loss): the same loss to 1e-6, summed in another order, 1.5e-5 apart after Adam's 3 steps
    assert max_diff(one, fsdp) < 5e-5
    answers(ckpt)


@pytest.mark.slow
def test_dpo_under_fsdp_on_two_processes_equals_one_process(tmp_path):
    one_losses, fsdp_losses, one, fsdp, _ = pair(tmp_path, "dpo", "adapter_model.safetensors", 29683, *PAIRS)
    assert fsdp_losses == pytest.approx(one_losses, rel=2e-6)  # measured equal (4.4e-7 with a warm-up step)
    assert sorted(fsdp) == sorted(one) and max_diff(fsdp, one) < 1e-5  # measured 3.7e-9 (2.3e-6 with a warm-up step)
