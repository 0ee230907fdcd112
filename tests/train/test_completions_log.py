"""--log_completions (tunewise.train.completions.CompletionsLog) on a real GRPOTrainer: the completion table TRL keeps
is written once per generation round, one record per completion with its rewards and advantage, eval rounds marked,
and a resumed run drops what followed its checkpoint."""
import json

import pytest
from transformers import TrainerControl, TrainerState

from tunewise.data.prompts import load_prompts, trl_rows
from tunewise.rewards import reward_functions
from tunewise.train.completions import CompletionsLog


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from tunewise.models.load import load_model, load_tokenizer, resolve_model

    rows = trl_rows(load_prompts(["additions#2"]))
    rewards, weights = reward_functions(["accuracy", "format"], rows=rows)
    path = resolve_model("tunewise-tiny")
    config = GRPOConfig(output_dir=str(tmp_path_factory.mktemp("grpo")), per_device_train_batch_size=4,
                        num_generations=4, max_completion_length=6, report_to=[], use_cpu=True, log_completions=True,
                        reward_weights=weights)
    trainer = GRPOTrainer(model=load_model(path), reward_funcs=rewards, args=config,
                          train_dataset=Dataset.from_list(rows), processing_class=load_tokenizer(path))
    trainer.model.train()
    return trainer, rows


def state_at(step):
    state = TrainerState()
    state.global_step = step
    return state


def test_each_round_is_written_once_with_its_rewards(trainer, tmp_path):
    trainer, rows = trainer
    log = CompletionsLog(tmp_path / "completions.jsonl")
    log.attach(trainer)
    trainer._generate_and_score_completions([rows[0]] * 4)
    log.on_log(None, state_at(1), TrainerControl(), logs={"loss": 0.0})
    log.on_log(None, state_at(2), TrainerControl(), logs={"loss": 0.0})  # the same round: not again
    trainer._generate_and_score_completions([rows[1]] * 4)
    log.on_log(None, state_at(3), TrainerControl(), logs={"eval_loss": 0.0})
    records = [json.loads(line) for line in (tmp_path / "completions.jsonl").read_text().splitlines()]
    assert [(r["step"], r["split"]) for r in records] == [(1, "train")] * 4 + [(3, "eval")] * 4
    assert records[0]["prompt"] == rows[0]["prompt"] and records[4]["prompt"] == rows[1]["prompt"]
    for r in records:
        assert set(r["rewards"]) == {"accuracy", "format"} and r["rewards"]["format"] == 0.0
        assert isinstance(r["advantage"], float) and r["completion"][-1]["role"] == "assistant"

    resumed = CompletionsLog(tmp_path / "completions.jsonl", resume_step=2)
    resumed.on_train_begin(None, state_at(2), TrainerControl())
    kept = [json.loads(line)["step"] for line in (tmp_path / "completions.jsonl").read_text().splitlines()]
    assert kept == [1] * 4


def test_a_trainer_without_a_completion_table_is_refused():
    from transformers import Trainer

    with pytest.raises(TypeError, match="keeps no completion table"):
        CompletionsLog("x").attach(object.__new__(Trainer))
