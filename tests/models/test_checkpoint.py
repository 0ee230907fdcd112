"""tunewise.models.checkpoint: one reading of what the user named (base, adapter, tokenizer, system, run args), the run
directory's complete checkpoints, and adapter_config.json (tunewise.models.adapter_config)."""
import json
import os

import pytest

from tunewise.models.adapter_config import adapter_base, is_lora, lora_dropout, lora_rank, name_base
from tunewise.models.checkpoint import (checkpoint_of, checkpoints, find_checkpoints, find_run_dir, holds_run,
                                        is_checkpoint, latest_checkpoint, newest_checkpoint, open_checkpoint,
                                        run_args_of, step_of, trainer_state)
from tunewise.errors import UserError
from tunewise.models.load import resolve_model


def run_dir_with(tmp_path, *, lora=True, tokenizer=False, system="You are Xiao Huang."):
    """A run directory as `tunewise sft` leaves it: args.json beside checkpoint-4/ (files only, no weights)."""
    run = tmp_path / "v0-run"
    ckpt = run / "checkpoint-4"
    ckpt.mkdir(parents=True)
    (run / "args.json").write_text(json.dumps({"command": "sft", "args": {"model": "tunewise-tiny", "system": system}}))
    (ckpt / ("adapter_config.json" if lora else "config.json")).write_text(json.dumps({"r": 16} if lora else {}))
    if tokenizer:
        (ckpt / "tokenizer_config.json").write_text("{}")
    return ckpt


def test_a_lora_checkpoint_names_its_runs_base_and_system(tmp_path):
    ckpt = run_dir_with(tmp_path)
    found = open_checkpoint(None, [str(ckpt)])
    assert found.base == resolve_model("tunewise-tiny") and found.adapter == str(ckpt)
    assert found.base_name == "tunewise-tiny" and found.system == "You are Xiao Huang." and found.label == str(ckpt)
    assert found.tokenizer_dir == found.base  # the adapter saved no tokenizer of its own
    assert find_run_dir(str(ckpt)) == ckpt.parent and lora_rank(ckpt) == 16
    assert open_checkpoint(None, [str(ckpt)], system="Be brief.").system == "Be brief."  # a given system wins


def test_an_adapters_own_tokenizer_is_used(tmp_path):
    ckpt = run_dir_with(tmp_path, tokenizer=True)
    assert open_checkpoint(None, [str(ckpt)]).tokenizer_dir == str(ckpt)


def test_a_full_checkpoint_is_the_model_itself(tmp_path):
    ckpt = run_dir_with(tmp_path, lora=False)
    found = open_checkpoint(None, [str(ckpt)])
    assert found.base == str(ckpt) and found.adapter is None and found.system == "You are Xiao Huang."


def test_a_base_model_and_the_errors(tmp_path):
    found = open_checkpoint("tunewise-tiny", [])
    assert found.adapter is None and found.run_args == {} and found.label == "tunewise-tiny"
    with pytest.raises(UserError, match="no such checkpoint directory"):
        open_checkpoint(None, [str(tmp_path / "missing")])
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    (lonely / "adapter_config.json").write_text("{}")
    with pytest.raises(UserError, match="no args.json beside it"):
        open_checkpoint(None, [str(lonely)])
    assert open_checkpoint("tunewise-tiny", [str(lonely)]).adapter == str(lonely)  # --model names the base instead
    assert run_args_of(str(lonely)) == {}
    with pytest.raises(UserError, match="give one checkpoint"):
        open_checkpoint(None, [str(lonely), str(lonely)])


def test_a_peft_adapter_from_elsewhere_names_its_base_in_adapter_config(tmp_path):
    ckpt = tmp_path / "peft-adapter"
    ckpt.mkdir()
    (ckpt / "adapter_config.json").write_text(json.dumps({"r": 8, "base_model_name_or_path": "tunewise-tiny"}))
    found = open_checkpoint(None, [str(ckpt)])
    assert found.base == resolve_model("tunewise-tiny") and found.base_name == "tunewise-tiny"
    assert found.run_args == {} and found.system is None


@pytest.mark.slow  # trains a model for more than a few seconds
def test_a_checkpoint_copied_on_its_own_loads_with_plain_peft_and_tunewise_infer(tmp_path, capsys):
    """The adapter names its base portably (the built-in model's name, not this install's path), and each
    checkpoint carries its run's args.json (system prompt and all), so a copy works without its run folder."""
    import shutil

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from cli_runs import run_cli

    run = tmp_path / "run"
    assert run_cli("sft", "--dataset", "self_cognition#8", "--model_name", "N", "--model_author", "A",
                   "--max_steps", 2, "--save_steps", 2, "--report_to", "none", "--system", "You are N.",
                   "--output_dir", run, "--add_version", "false") == 0
    config = json.loads((run / "checkpoint-2" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "tunewise-tiny"
    assert json.loads((run / "args.json").read_text())["model_path"] == str(resolve_model("tunewise-tiny"))
    copy = tmp_path / "elsewhere" / "my-adapter"
    shutil.copytree(run / "checkpoint-2", copy)
    shutil.rmtree(run)

    found = open_checkpoint(None, [str(copy)])
    assert found.base_name == "tunewise-tiny" and found.system == "You are N."
    base = AutoModelForCausalLM.from_pretrained(resolve_model(config["base_model_name_or_path"]))
    model = PeftModel.from_pretrained(base, copy)  # plain peft
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        tuned = model(ids).logits
        with model.disable_adapter():
            assert not torch.equal(tuned, model(ids).logits)  # the trained adapter was applied
    capsys.readouterr()
    assert run_cli("infer", "--adapters", copy, "--query", "who are you?", "--max_new_tokens", 8) == 0
    assert capsys.readouterr().out.strip()


def test_a_run_directory_opens_its_best_else_its_last_checkpoint(tmp_path):
    ckpt = run_dir_with(tmp_path)
    run = ckpt.parent
    assert checkpoint_of(str(run)) == str(run)  # no best or last link yet: as given
    (run / "last").symlink_to(ckpt.name)
    assert open_checkpoint(None, [str(run)]).adapter == str(run / "last")
    (run / "checkpoint-2").mkdir()
    (run / "checkpoint-2" / "adapter_config.json").write_text("{}")
    (run / "best").symlink_to("checkpoint-2")
    found = open_checkpoint(None, [str(run)])
    assert found.adapter == str(run / "best") and found.base_name == "tunewise-tiny"
    assert found.system == "You are Xiao Huang." and found.run_args["model"] == "tunewise-tiny"
    assert checkpoint_of(str(ckpt)) == str(ckpt) and checkpoint_of("tunewise-tiny") == "tunewise-tiny"


def test_a_merged_export_opens_as_a_model(tmp_path):
    """A merged export (config.json, no adapter, no run beside it) is a model: by --model, or as --adapters."""
    merged = tmp_path / "checkpoint-4-merged"
    merged.mkdir()
    (merged / "config.json").write_text("{}")
    by_model = open_checkpoint(str(merged), [])
    assert by_model.base == str(merged) and by_model.adapter is None and by_model.run_args == {}
    by_adapters = open_checkpoint(None, [str(merged)])
    assert by_adapters.base == str(merged) and by_adapters.adapter is None and by_adapters.system is None
    assert not is_checkpoint(str(merged)) and is_checkpoint(str(run_dir_with(tmp_path)))


def test_the_web_ui_finds_lora_checkpoints_newest_first(tmp_path):
    older = run_dir_with(tmp_path)  # OUTPUT_DIR/v0-run/checkpoint-4
    run = older.parent
    newer = run / "checkpoint-8"
    newer.mkdir()
    (newer / "adapter_config.json").write_text("{}")
    os.utime(older, (1, 1))
    (run / ".staging" / "checkpoint-9").mkdir(parents=True)  # never published
    (run / ".staging" / "checkpoint-9" / "adapter_config.json").write_text("{}")
    assert find_checkpoints(tmp_path) == [newer, older]  # runs one level down
    assert find_checkpoints(run) == [newer, older]  # a run directory itself
    assert find_checkpoints(tmp_path / "missing") == []


def test_a_run_directorys_complete_checkpoints(tmp_path):
    assert newest_checkpoint(None) is None and newest_checkpoint(tmp_path / "missing") is None
    assert not holds_run(tmp_path)
    for step in (10, 2):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (tmp_path / "checkpoint-30").mkdir()  # no trainer state: not complete
    (tmp_path / "checkpoint-40").mkdir()
    (tmp_path / "checkpoint-40" / "trainer_state.json").write_text('{"global_st')  # cut short
    assert [p.name for p in checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-10"]
    assert newest_checkpoint(tmp_path).name == "checkpoint-10" and holds_run(tmp_path)
    assert step_of(tmp_path / "checkpoint-10") == 10 and step_of(tmp_path / "best") == -1
    assert trainer_state(tmp_path / "checkpoint-2") == {"global_step": 2} and trainer_state(tmp_path) is None
    assert latest_checkpoint(str(tmp_path)).name in {"checkpoint-2", "checkpoint-10"}
    with pytest.raises(UserError, match="no complete checkpoint"):
        latest_checkpoint(str(tmp_path / "checkpoint-30"))


def test_adapter_config_is_read_in_one_place(tmp_path):
    ckpt = run_dir_with(tmp_path)
    assert is_lora(ckpt) and lora_rank(ckpt) == 16 and lora_dropout(ckpt) == 0.0 and adapter_base(ckpt) is None
    (ckpt / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_dropout": 0.05}))
    assert lora_rank(ckpt) == 4 and lora_dropout(ckpt) == 0.05
    name_base(ckpt, "tunewise-tiny")
    assert adapter_base(ckpt) == "tunewise-tiny" and lora_dropout(ckpt) == 0.05
    name_base(tmp_path, "x")  # no adapter here: nothing written
    assert not is_lora(tmp_path) and not (tmp_path / "adapter_config.json").exists()


@pytest.mark.parametrize("mode, trainable", [("merged", "all"), ("trainable", "adapter"), ("attached", "none")])
def test_what_each_adapter_mode_leaves_trainable(mode, trainable, tmp_path):
    """"merged" is a plain model again, every weight trainable: peft froze the base when it attached the adapter,
    and `dpo --adapters CKPT --train_type full` crashed on its first backward pass ("does not require grad")."""
    from peft import LoraConfig, get_peft_model

    from tunewise.models.checkpoint import Checkpoint, load
    from tunewise.models.load import load_model

    base = resolve_model("tunewise-tiny")
    get_peft_model(load_model(base, "float32"), LoraConfig(r=4, target_modules=["q_proj"])).save_pretrained(tmp_path)
    model = load(Checkpoint(base, str(tmp_path), None, "t", "tunewise-tiny"), "float32", adapter=mode)
    grads = {name: p.requires_grad for name, p in model.named_parameters()}
    expected = {"all": lambda name: True, "adapter": lambda name: "lora_" in name, "none": lambda name: False}
    assert grads == {name: expected[trainable](name) for name in grads}
