"""The rewards as TRL's GRPOTrainer calls them: one GRPO step on the embedded model with the built-in `additions`
prompts, the rewards logged under their --reward_funcs names, and a plugin that raises mid-training stopping the run
with a UserError that names the row."""
import pytest

from tunewise.data.prompts import load_prompts, trl_rows
from tunewise.errors import UserError
from tunewise.rewards import RewardArgs, reward_functions, try_rewards


def grpo(tmp_path, rewards, weights, rows):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from tunewise.models.load import load_model, load_tokenizer, resolve_model

    path = resolve_model("tunewise-tiny")
    config = GRPOConfig(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=4, num_generations=4,
                        max_completion_length=8, learning_rate=1e-5, logging_steps=1, save_strategy="no",
                        report_to=[], use_cpu=True, disable_tqdm=True, reward_weights=weights, seed=0)
    return GRPOTrainer(model=load_model(path), reward_funcs=rewards, args=config, train_dataset=Dataset.from_list(rows),
                       processing_class=load_tokenizer(path))


@pytest.mark.slow
def test_one_grpo_step_logs_each_reward_by_name(tmp_path):
    rows = trl_rows(load_prompts(["additions#4"]))
    args = RewardArgs(max_completion_length=8, soft_cache_length=4, use_math_verify=False)
    rewards, weights = reward_functions(["accuracy", "format", "soft_overlong"], [1.0, 0.1, 0.5], rows=rows,
                                        args=args)
    try_rewards(rewards, rows)
    trainer = grpo(tmp_path, rewards, weights, rows)
    trainer.train()
    logged = trainer.state.log_history[0]
    assert {"rewards/accuracy/mean", "rewards/format/mean", "rewards/soft_overlong/mean"} <= set(logged)
    assert logged["rewards/accuracy/mean"] > 0.5  # the embedded model adds well
    assert logged["rewards/format/mean"] == 0.0  # and never writes <think>


@pytest.mark.slow
def test_a_plugin_that_raises_during_training_names_the_row(tmp_path):
    f = tmp_path / "plugin.py"
    f.write_text("from tunewise.rewards import register\n\n"
                 "@register('picky')\n"
                 "def picky(prompts, completions, solution, **kwargs):\n"
                 "    return [1.0 / (int(s) - 30) for s in solution]\n", encoding="utf-8")
    rows = trl_rows(load_prompts(["additions#4"]))
    for row in rows:
        row["solution"] = "30"  # every row makes it divide by zero: the first batch raises
    rewards, weights = reward_functions(["picky"], plugin_files=[str(f)], rows=rows)
    with pytest.raises(UserError, match=r"reward function 'picky' \(.*plugin.py:5\) raised ZeroDivisionError.*on row "
                                        r".*additions.jsonl:\d+"):
        grpo(tmp_path / "run", rewards, weights, rows).train()
