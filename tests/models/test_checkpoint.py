"""tunewise.models.checkpoint: one reading of a checkpoint for every command (base, adapter, tokenizer, system, run args)."""
import json

import pytest

from tunewise.models.checkpoint import find_run_dir, lora_rank, resolve, run_args_of
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
    found = resolve(None, [str(ckpt)])
    assert found.base == resolve_model("tunewise-tiny") and found.adapter == str(ckpt)
    assert found.base_name == "tunewise-tiny" and found.system == "You are Xiao Huang." and found.label == str(ckpt)
    assert found.tokenizer_dir == found.base  # the adapter saved no tokenizer of its own
    assert find_run_dir(str(ckpt)) == ckpt.parent and lora_rank(ckpt) == 16
    assert resolve(None, [str(ckpt)], system="Be brief.").system == "Be brief."  # a given system wins


def test_an_adapters_own_tokenizer_is_used(tmp_path):
    ckpt = run_dir_with(tmp_path, tokenizer=True)
    assert resolve(None, [str(ckpt)]).tokenizer_dir == str(ckpt)


def test_a_full_checkpoint_is_the_model_itself(tmp_path):
    ckpt = run_dir_with(tmp_path, lora=False)
    found = resolve(None, [str(ckpt)])
    assert found.base == str(ckpt) and found.adapter is None and found.system == "You are Xiao Huang."


def test_a_base_model_and_the_errors(tmp_path):
    found = resolve("tunewise-tiny", [])
    assert found.adapter is None and found.run_args == {} and found.label == "tunewise-tiny"
    with pytest.raises(UserError, match="no such checkpoint directory"):
        resolve(None, [str(tmp_path / "missing")])
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    (lonely / "adapter_config.json").write_text("{}")
    with pytest.raises(UserError, match="no args.json beside it"):
        resolve(None, [str(lonely)])
    assert resolve("tunewise-tiny", [str(lonely)]).adapter == str(lonely)  # --model names the base instead
    assert run_args_of(str(lonely)) == {}
    with pytest.raises(UserError, match="give one checkpoint"):
        resolve(None, [str(lonely), str(lonely)])


def test_a_peft_adapter_from_elsewhere_names_its_base_in_adapter_config(tmp_path):
    ckpt = tmp_path / "peft-adapter"
    ckpt.mkdir()
    (ckpt / "adapter_config.json").write_text(json.dumps({"r": 8, "base_model_name_or_path": "tunewise-tiny"}))
    found = resolve(None, [str(ckpt)])
    assert found.base == resolve_model("tunewise-tiny") and found.base_name == "tunewise-tiny"
    assert found.run_args == {} and found.system is None


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

    found = resolve(None, [str(copy)])
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
