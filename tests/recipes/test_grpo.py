"""`tunewise rlhf --rlhf_type grpo` (tunewise.recipes.grpo): the plan counts the completions TRL's sampler deals,
a short run on the embedded model logs its rewards on the planned learning-rate curve, and bad input stops before
anything is written."""
import json

import pytest

from cli_runs import read_log, run_cli

GRPO_FLAGS = ["rlhf", "--rlhf_type", "grpo", "--model_name", "N", "--model_author", "A", "--max_completion_length", "8"]
GRPO = [*GRPO_FLAGS, "--report_to", "none"]


pytestmark = pytest.mark.usefixtures("restore_reward_registry")  # tests/conftest.py


@pytest.mark.parametrize("prompts,batch,generations,per_generation,accumulation", [
    (10, 8, 4, 1, 1), (10, 8, 4, 2, 1), (13, 8, 4, 1, 2), (7, 4, 2, 1, 1), (9, 8, 8, 1, 1)])
def test_the_plan_counts_the_batches_trls_sampler_deals(prompts, batch, generations, per_generation, accumulation,
                                                        tmp_path):
    """completions() / (batch x processes) = the length of GRPOTrainer's own train dataloader."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from tunewise.args import GrpoArgs
    from tunewise.models.load import load_model, load_tokenizer, resolve_model
    from tunewise.recipes.grpo import completions

    rows = [{"prompt": [{"role": "user", "content": f"{i}+1="}]} for i in range(prompts)]
    args = GrpoArgs(dataset=["x"], reward_funcs=["accuracy"], per_device_train_batch_size=batch,
                    num_generations=generations, steps_per_generation=per_generation,
                    gradient_accumulation_steps=accumulation)
    base = resolve_model("tunewise-tiny")
    config = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=batch, num_generations=generations,
                        steps_per_generation=per_generation, gradient_accumulation_steps=accumulation,
                        max_completion_length=4, report_to=[], use_cpu=True)
    trainer = GRPOTrainer(model=load_model(base), reward_funcs=[lambda completions, **_: [0.0] * len(completions)],
                          args=config, train_dataset=Dataset.from_list(rows), processing_class=load_tokenizer(base))
    assert completions(args, rows, 1) // batch == len(trainer.get_train_dataloader())


SPREAD_PLUGIN = """from tunewise.rewards import register


@register("digits")
def digits(prompts, completions, **kwargs):
    # a reward that differs between a prompt's completions at a high temperature: the share of digits
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [sum(ch.isdigit() for ch in t) / max(len(t), 1) for t in texts]
"""


@pytest.mark.slow  # trains a model for more than a few seconds
def test_a_short_run_shows_its_rewards_lengths_kl_and_completions(tmp_path):
    """logging.jsonl and TensorBoard get each reward's mean and std, the completion lengths and cut share, the KL and
    the clip ratios, on the planned learning-rate curve; rewards.png is drawn; --log_completions writes every
    completion of each logged round with its rewards and advantage, and they agree with the logged means and with
    the group-normalised advantages."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tunewise.train.completions import FILE

    plugin = tmp_path / "spread.py"
    plugin.write_text(SPREAD_PLUGIN, encoding="utf-8")
    out = tmp_path / "run"
    argv = [*GRPO_FLAGS, "--report_to", "tensorboard", "--dataset", "additions#16", "--external_plugins", plugin,
            "--reward_funcs", "accuracy", "format", "digits", "--reward_weights", "1", "0.5", "1",
            "--num_generations", "4", "--per_device_train_batch_size", "8", "--gradient_accumulation_steps", "1",
            "--temperature", "3", "--max_steps", "2", "--logging_steps", "1", "--save_steps", "2",
            "--log_completions", "true", "--output_dir", out, "--add_version", "false"]
    assert run_cli(*argv) == 0
    log = [r for r in read_log(out) if "loss" in r]
    assert [r["step"] for r in log] == [1, 2]
    shown = [f"rewards/{name}/{stat}" for name in ("accuracy", "format", "digits") for stat in ("mean", "std")] + [
        "reward", "reward_std", "completions/mean_length", "completions/min_length", "completions/max_length",
        "completions/clipped_ratio", "kl", "clip_ratio/region_mean", "clip_ratio/low_mean", "clip_ratio/high_mean"]
    for record in log:
        assert record["lr"] == pytest.approx(record["planned_lr"], rel=1e-9)
        assert set(shown) <= set(record), set(shown) - set(record)
        assert 0.0 <= record["rewards/accuracy/mean"] <= 1.0 and record["rewards/format/mean"] == 0.0
        assert 1 <= record["completions/min_length"] <= record["completions/mean_length"] \
            <= record["completions/max_length"] <= 8
    events = EventAccumulator(str(out / "runs"))
    events.Reload()
    assert {f"train/{key}" for key in shown} <= set(events.Tags()["scalars"])
    assert [e.value for e in events.Scalars("train/rewards/digits/mean")] == \
        pytest.approx([r["rewards/digits/mean"] for r in log], rel=1e-6)
    assert (out / "rewards.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    completions = [json.loads(line) for line in (out / FILE).read_text(encoding="utf-8").splitlines()]
    assert [c["step"] for c in completions] == [1] * 8 + [2] * 8  # one round of 2 prompts x 4 per step
    for step, record in zip((1, 2), log):
        rows = [c for c in completions if c["step"] == step]
        assert {c["split"] for c in rows} == {"train"}
        assert all(isinstance(c["prompt"], list) and c["completion"][-1]["role"] == "assistant" for c in rows)
        for name in ("accuracy", "digits"):
            mean = sum(c["rewards"][name] for c in rows) / len(rows)
            assert mean == pytest.approx(record[f"rewards/{name}/mean"], abs=1e-6)
        for group in (rows[:4], rows[4:]):  # a prompt's completions stand together
            assert len({json.dumps(c["prompt"]) for c in group}) == 1
            totals = [c["rewards"]["accuracy"] + 0.5 * c["rewards"]["format"] + c["rewards"]["digits"] for c in group]
            mean = sum(totals) / 4
            std = (sum((t - mean) ** 2 for t in totals) / 3) ** 0.5
            assert [c["advantage"] for c in group] == pytest.approx([(t - mean) / (std + 1e-4) for t in totals],
                                                                     abs=1e-4)
    assert any(c["advantage"] != 0 for c in completions)  # the test saw real advantages
    plan = json.loads((out / "plan.json").read_text())
    assert plan["steps"]["total_steps"] == 2
    assert any("16 prompts x 4 completions" in note for note in plan["extra"]["notes"])
    assert (out / "last").resolve().name == "checkpoint-2"


@pytest.mark.parametrize("flags,message", [
    (["--reward_funcs", "acuracy"], "acuracy"),
    (["--reward_funcs", "accuracy", "--num_generations", "3"], "--num_generations 3 does not divide"),
    (["--reward_funcs", "accuracy", "--reward_weights", "1", "2"], "--reward_weights has 2 values"),
    (["--reward_funcs", "accuracy", "--dataset", "{no_solution}"], "solution"),
    (["--reward_funcs", "accuracy", "--split_dataset_ratio", "0.25"], "must be a multiple of --num_generations 4"),
])
def test_bad_input_stops_before_anything_is_written(flags, message, tmp_path, capsys):
    no_solution = tmp_path / "prompts.jsonl"  # prompts without a solution: accuracy has nothing to check against
    no_solution.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"{i}+2="}]}) + "\n"
                                   for i in range(16)))
    out = tmp_path / "run"
    argv = [*GRPO, "--dataset", "additions#16", "--num_generations", "4", "--per_device_train_batch_size", "8",
            "--gradient_accumulation_steps", "1", "--output_dir", out,
            *[str(no_solution) if f == "{no_solution}" else f for f in flags]]
    assert run_cli(*argv) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_rlhf_names_what_it_trains(capsys):
    assert run_cli("rlhf", "--rlhf_type", "ppo", "--dataset", "additions") == 2
    assert "--rlhf_type ppo: tunewise trains dpo, grpo" in capsys.readouterr().err


def test_the_sampling_flags_reach_grpos_config():
    """--top_k -1 (ms-swift's "all tokens") is TRL's 0; bad values stop the run."""
    from tunewise.args import GrpoArgs
    from tunewise.errors import UserError
    from tunewise.recipes.grpo import config_fields

    base = dict(dataset=["x"], reward_funcs=["accuracy"])
    fields = config_fields(GrpoArgs(**base))
    assert (fields["top_k"], fields["top_p"], fields["repetition_penalty"]) == (0, 1.0, 1.0)
    fields = config_fields(GrpoArgs(**base, top_k=1, top_p=0.9, repetition_penalty=1.1))
    assert (fields["top_k"], fields["top_p"], fields["repetition_penalty"]) == (1, 0.9, 1.1)
    for bad in ({"top_k": -2}, {"top_p": 0.0}, {"repetition_penalty": 0.0}):
        with pytest.raises(UserError, match="--top_k must be -1"):
            GrpoArgs(**base, **bad)


def test_lora_grpo_keeps_one_adapter_and_its_reference_is_the_adapter_disabled(tmp_path):
    """GRPOTrainer wraps the model with the new adapter itself: no frozen "ref" copy of it (which TRL makes for a
    PeftModel it is handed, and runs in every reference pass), no second model; the same seed draws the same
    adapter."""
    from tunewise.args import GrpoArgs
    from tunewise.flags import parse
    from tunewise.plan.resolve import resolve
    from tunewise.recipes.grpo import RECIPE
    from tunewise.train.build import build_trainer

    def trainer(name):
        args, sources, _ = parse(GrpoArgs, ["--dataset", "additions#8", "--reward_funcs", "accuracy",
                                            "--num_generations", "4", "--per_device_train_batch_size", "8",
                                            "--gradient_accumulation_steps", "1", "--max_steps", "1",
                                            "--report_to", "none", "--output_dir", str(tmp_path / name)])
        return build_trainer(resolve(RECIPE, args, sources), tmp_path / name, callbacks=[])

    first, second = trainer("a"), trainer("b")
    assert list(first.model.peft_config) == ["default"] and first.ref_model is None and first.beta > 0
    lora = {n: p for n, p in first.model.named_parameters() if "lora_A" in n}
    assert lora and all(p.requires_grad for p in lora.values())
    again = dict(second.model.named_parameters())
    assert all((p == again[n]).all() for n, p in lora.items())
