"""`tunewise rlhf --rlhf_type grpo` (tunewise.recipes.grpo): the plan counts the completions TRL's sampler deals,
a short run on the embedded model logs its rewards on the planned learning-rate curve, and bad input stops before
anything is written."""
import json

import pytest

from cli_runs import read_log, run_cli

GRPO = ["rlhf", "--rlhf_type", "grpo", "--model_name", "N", "--model_author", "A", "--max_completion_length", "8",
        "--report_to", "none"]


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


@pytest.mark.slow  # trains a model for more than a few seconds
def test_a_short_run_logs_its_rewards_on_the_planned_curve(tmp_path):
    out = tmp_path / "run"
    assert run_cli(*GRPO, "--dataset", "additions#16", "--reward_funcs", "accuracy", "format",
                   "--reward_weights", "1", "0.5", "--num_generations", "4", "--per_device_train_batch_size", "8",
                   "--gradient_accumulation_steps", "1", "--max_steps", "2", "--logging_steps", "1",
                   "--save_steps", "2", "--output_dir", out, "--add_version", "false") == 0
    log = [r for r in read_log(out) if "loss" in r]
    assert [r["step"] for r in log] == [1, 2]
    for record in log:
        assert record["lr"] == pytest.approx(record["planned_lr"], rel=1e-9)
        assert 0.0 <= record["rewards/accuracy/mean"] <= 1.0 and "rewards/format/mean" in record
        assert "completions/mean_length" in record and "kl" in record
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
