"""tunewise.plan.resolve: parsed flags -> one frozen, validated Run, with nothing written to disk."""
import dataclasses
import json

import pytest

from tunewise.args import DpoArgs, SftArgs
from tunewise.errors import UserError
from tunewise.flags import parse
from tunewise.models.load import builtin_meta, resolve_model
from tunewise.recipes.dpo import RECIPE as DPO
from tunewise.plan.resolve import resolve
from tunewise.recipes.sft import RECIPE as SFT


def test_a_run_is_resolved_once_frozen_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    args, sources, _ = parse(SftArgs, ["--dataset", "self_cognition#20", "--model_name", "N", "--model_author", "A", "--output_dir", str(out)])
    run = resolve(SFT, args, sources)
    recommended = builtin_meta(resolve_model("tunewise-tiny"))["recommended"]["lora"]
    for name, value in recommended.items():  # the model's values, recorded as the model's
        assert getattr(run.args, name) == value and run.sources[name] == "model"
    assert any(note.startswith("tunewise-tiny recommends its own defaults") for note in run.notes)
    assert run.schedule.learning_rate == run.args.learning_rate and run.step_plan.total_steps > 0
    assert len(run.train_rows) == 20 and run.model_dir == resolve_model("tunewise-tiny")
    assert not out.exists()
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.args = args
    with pytest.raises(TypeError):
        run.sources["learning_rate"] = "flag"  # a read-only view


def test_the_default_warm_up_is_a_default_and_a_given_one_wins(tmp_path):
    args, sources, _ = parse(SftArgs, ["--dataset", "self_cognition#20", "--model_name", "N", "--model_author", "A", "--model", str(tmp_path / "none")])
    with pytest.raises(UserError):  # a missing local model fails in resolve, before anything is written
        resolve(SFT, args, sources)
    args, sources, _ = parse(SftArgs, ["--dataset", "self_cognition#20", "--model_name", "N", "--model_author", "A", "--warmup_steps", "3"])
    run = resolve(SFT, args, sources)
    assert run.args.warmup_steps == 3 and run.args.warmup_ratio is None and run.sources["warmup"] == "flag"
    assert run.schedule.warmup_steps == 3


def test_dpo_from_an_sft_checkpoint_takes_its_base_and_system(tmp_path):
    ckpt = tmp_path / "v0-run" / "checkpoint-4"
    ckpt.mkdir(parents=True)
    (ckpt.parent / "args.json").write_text(json.dumps({"args": {"model": "tunewise-tiny", "system": "Be Xiao Huang."}}))
    (ckpt / "adapter_config.json").write_text("{}")
    args, sources, _ = parse(DpoArgs, ["--dataset", "concise#4", "--adapters", str(ckpt)])
    run = resolve(DPO, args, sources)
    assert run.args.model == "tunewise-tiny" and run.sources["model"] == "adapters"
    assert run.args.system == "Be Xiao Huang." and run.sources["system"] == "adapters"
    assert run.start.adapter == str(ckpt) and run.recipe.pairs
    assert any(note.startswith(f"starting from {ckpt}") for note in run.notes)


def test_a_missing_dataset_is_the_recipes_error():
    for recipe, cls, hint in ((SFT, SftArgs, "self_cognition"), (DPO, DpoArgs, "preference pairs")):
        args, sources, _ = parse(cls, [])
        with pytest.raises(UserError, match=hint):
            resolve(recipe, args, sources)
