"""The command classes composed from the groups: their fields, frozen values re-validated by dataclasses.replace,
and problems of flags of two groups."""
import dataclasses
import json

import pytest

from tunewise.args import (DataArgs, DistributedArgs, DpoArgs, EvaluationArgs, GrpoArgs, GrpoFlags, InferArgs,
                           KtoArgs, KtoFlags, LoraArgs, ModelArgs, OptimisationArgs, PolicyStartArgs, PreferenceArgs,
                           QuantizationArgs, RunDirArgs, Sampling, SftArgs, SpeedArgs)
from tunewise.errors import UserError
from tunewise.flags import parse
from tunewise.plan.resolve import recommended_changes, revalidated


def test_recommended_values_only_replace_defaults():
    args, sources, _ = parse(SftArgs, ["--learning_rate", "5e-5"])
    changed = recommended_changes(sources, {"learning_rate": 1e-3, "gradient_accumulation_steps": 1})
    assert changed == {"gradient_accumulation_steps": 1}
    resolved = revalidated(args, {name: (value, "model") for name, value in changed.items()})
    assert resolved.learning_rate == 5e-5 and resolved.gradient_accumulation_steps == 1
    assert args.gradient_accumulation_steps == 16  # parsed args are frozen: resolving builds a new object
    with pytest.raises(dataclasses.FrozenInstanceError):
        args.learning_rate = 1.0
    json.dumps(sources)


def test_a_recommended_value_is_validated_like_a_flag_and_named_as_the_models():
    args, sources, _ = parse(SftArgs, [])
    with pytest.raises(UserError) as err:
        revalidated(args, {"lora_rank": (0, "model")})
    assert "--lora_rank 0: must be at least 1." in str(err.value)
    assert "lora_rank=0 (recommended by tunewise-tiny)" in str(err.value)


def names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def test_a_command_has_its_groups_flags_in_reading_order_and_nothing_else():
    groups = [ModelArgs, LoraArgs, QuantizationArgs, DataArgs, OptimisationArgs, SpeedArgs, DistributedArgs,
              EvaluationArgs, RunDirArgs]
    assert names(SftArgs) == [name for group in groups for name in names(group)]
    assert len(names(SftArgs)) == len(set(names(SftArgs))) == 73
    assert names(DpoArgs) == names(SftArgs) + names(PolicyStartArgs) + names(PreferenceArgs)
    assert names(KtoArgs) == names(SftArgs) + names(PolicyStartArgs) + names(KtoFlags)
    assert names(GrpoArgs) == names(SftArgs) + names(GrpoFlags)
    assert names(InferArgs) == names(Sampling) + names(ModelArgs) + ["adapters", "query", "stream"]
    fields = {f.name: f for f in dataclasses.fields(DpoArgs)}
    assert fields["padding_free"].default is False and fields["padding_free"].metadata["help"].startswith("sft only")


def test_replace_checks_the_new_values_with_every_groups_checks():
    args = SftArgs()
    assert dataclasses.replace(args, lora_rank=16).lora_rank == 16
    with pytest.raises(UserError, match=r"^--lora_rank 0: must be at least 1\. --save_steps 0: must be at least 1\.$"):
        dataclasses.replace(args, lora_rank=0, save_steps=0)
    dpo = DpoArgs()
    with pytest.raises(UserError, match=r"^--beta 0: must be positive\.$"):
        dataclasses.replace(dpo, beta=0)


def test_problems_of_two_groups_are_checked_by_the_command():
    with pytest.raises(UserError) as e:
        SftArgs(packing=True, padding_free=False)
    assert str(e.value) == ("--packing true keeps each packed row apart through padding-free batches; it cannot be "
                            "used with --padding_free false.")
    with pytest.raises(UserError) as e:
        SftArgs(group_by_length=True)
    assert str(e.value) == ("--group_by_length true groups rows to save padding; with --padding_free true (the "
                            "default) there is none: give --padding_free false as well.")
    SftArgs(group_by_length=True, padding_free=False)


def test_dpo_refuses_the_sft_only_options_first_then_reports_the_sft_and_dpo_problems():
    with pytest.raises(UserError) as e:
        parse(DpoArgs, ["--chunked_loss", "true", "--lora_rank", "0", "--beta", "-1"])
    assert str(e.value) == ("--chunked_loss true: an sft option; dpo pads its preference pairs and TRL computes their "
                            "log-probabilities over every position. --lora_rank 0: must be at least 1. "
                            "--beta -1.0: must be positive.")
    assert DpoArgs().recipe() == "dpo_lora" and SftArgs(train_type="full").recipe() == "full"
