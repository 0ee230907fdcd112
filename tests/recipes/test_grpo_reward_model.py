"""GRPO with --reward_model (tunewise.rewards.models): a reward model's score of prompt + completion is a reward after
the --reward_funcs, weighted by --reward_weights in that order; anything that is not a reward model stops the run
before anything is written; the plan counts the reward model's memory."""
import json

import pytest

from cli_runs import read_log, run_cli

GRPO = ["rlhf", "--rlhf_type", "grpo", "--model_name", "N", "--model_author", "A", "--max_completion_length", "8",
        "--report_to", "none", "--dataset", "additions#8", "--num_generations", "4",
        "--per_device_train_batch_size", "8", "--gradient_accumulation_steps", "1", "--add_version", "false"]


@pytest.fixture(scope="module")
def reward_models(tmp_path_factory):
    """A full sequence classifier and a SEQ_CLS LoRA adapter on the embedded model (score heads as drawn: what is
    checked is that the run scores with these very models)."""
    from peft import get_peft_model
    from transformers import set_seed

    from tunewise.args import RmArgs
    from tunewise.flags import parse
    from tunewise.models.checkpoint import open_checkpoint
    from tunewise.recipes.rm import reward_lora_config, reward_model

    root = tmp_path_factory.mktemp("reward_models")
    set_seed(0)
    checkpoint = open_checkpoint("tunewise-tiny")
    tokenizer = checkpoint.load_tokenizer()
    model = reward_model(checkpoint, tokenizer)
    model.save_pretrained(root / "judge")
    tokenizer.save_pretrained(root / "judge")
    lora = get_peft_model(model, reward_lora_config(parse(RmArgs, [])[0]))
    for name, param in lora.named_parameters():  # a non-zero adapter, so that it changes the scores
        if "lora_B" in name:
            param.data.normal_(0, 0.05)
    lora.save_pretrained(root / "lora-judge")
    return root


def rendered_score(model_dir, messages) -> float:
    """The reward of one conversation by plain transformers: the classifier's logit at the last token of the chat
    template's rendering."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1).eval()
    ids = tokenizer(tokenizer.apply_chat_template(messages, tokenize=False), return_tensors="pt",
                    add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids).logits[0, 0].item()


def test_a_reward_model_scores_each_completion_after_the_functions(reward_models, tmp_path):
    out = tmp_path / "run"
    assert run_cli(*GRPO, "--reward_funcs", "accuracy", "--reward_model", reward_models / "judge",
                   "--reward_weights", "1", "0.5", "--max_steps", "1", "--logging_steps", "1",
                   "--log_completions", "true", "--temperature", "2", "--output_dir", out) == 0
    [record] = [r for r in read_log(out) if "loss" in r]
    assert {"rewards/accuracy/mean", "rewards/judge/mean", "rewards/judge/std"} <= set(record)
    rows = [json.loads(line) for line in (out / "completions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 8 and all(set(r["rewards"]) == {"accuracy", "judge"} for r in rows)
    for row in rows[:3]:  # the logged reward is the reward model's own score of the conversation
        assert row["rewards"]["judge"] == pytest.approx(
            rendered_score(reward_models / "judge", row["prompt"] + row["completion"]), abs=1e-4)
    assert len({round(r["rewards"]["judge"], 6) for r in rows}) > 1
    totals = [r["rewards"]["accuracy"] + 0.5 * r["rewards"]["judge"] for r in rows]
    assert record["reward"] == pytest.approx(sum(totals) / len(totals), abs=1e-5)
    notes = json.loads((out / "plan.json").read_text())["extra"]["notes"]
    assert any(f"rewards accuracy, judge (--reward_model {reward_models / 'judge'})" in note for note in notes)


def test_a_lora_reward_model_scores_with_its_adapter_merged(reward_models, tmp_path):
    """An rm LoRA checkpoint from elsewhere (its base named in adapter_config.json) scores as the merged model."""
    from tunewise.rewards.models import load_reward_models

    [merged], _ = load_reward_models([str(reward_models / "lora-judge")], "float32")
    merged.save_pretrained(tmp_path / "merged")
    (tmp_path / "merged" / "tokenizer.json").write_bytes((reward_models / "judge" / "tokenizer.json").read_bytes())
    for name in ("tokenizer_config.json", "chat_template.jinja"):
        if (reward_models / "judge" / name).is_file():
            (tmp_path / "merged" / name).write_bytes((reward_models / "judge" / name).read_bytes())
    conversation = [{"role": "user", "content": "3+4=?"}, {"role": "assistant", "content": "3+4=7"}]
    with_adapter = rendered_score(tmp_path / "merged", conversation)
    assert with_adapter != pytest.approx(rendered_score(reward_models / "judge", conversation), abs=1e-3)
    out = tmp_path / "run"
    assert run_cli(*GRPO, "--reward_model", reward_models / "lora-judge", "--max_steps", "1", "--logging_steps", "1",
                   "--log_completions", "true", "--output_dir", out) == 0
    row = json.loads((out / "completions.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert set(row["rewards"]) == {"lora-judge"}
    assert row["rewards"]["lora-judge"] == pytest.approx(
        rendered_score(tmp_path / "merged", row["prompt"] + row["completion"]), abs=1e-4)


def test_the_plan_counts_the_reward_models_memory(reward_models, tmp_path):
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "plan"
    assert run_cli("plan", *GRPO[1:], "--reward_funcs", "accuracy", "--reward_model", reward_models / "judge",
                   "--output_dir", out) == 0
    memory = json.loads((out / "plan.json").read_text())["extra"]["memory"]
    judge = AutoModelForSequenceClassification.from_pretrained(reward_models / "judge", num_labels=1)
    assert memory["parts"]["reward_models"] == 4 * sum(p.numel() for p in judge.parameters())  # float32
    assert memory["phases"]["reward_scoring"]["reward_model_layer"] > 0


@pytest.mark.parametrize("flags, message", [
    (["--reward_model", "{missing}"], "no such checkpoint directory"),
    (["--reward_model", "{chat}"], "is not a reward model"),
    (["--reward_funcs", "accuracy", "--reward_model", "{judge}", "--reward_weights", "1"],
     "--reward_weights has 1 values for 1 --reward_funcs and 1 --reward_model"),
])
def test_what_is_not_a_reward_model_stops_before_anything_is_written(reward_models, tmp_path, capsys, flags,
                                                                      message):
    from tunewise.models.load import resolve_model

    paths = {"{missing}": str(tmp_path / "nowhere"), "{chat}": resolve_model("tunewise-tiny"),
             "{judge}": str(reward_models / "judge")}
    out = tmp_path / "run"
    assert run_cli(*GRPO, *[paths.get(f, f) for f in flags], "--output_dir", out) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_a_reward_models_name_never_merges_with_a_reward_functions():
    from tunewise.rewards.models import reward_model_names

    assert reward_model_names(["/runs/accuracy", "/runs/rm/checkpoint-20", "/other/rm/checkpoint-20"],
                              taken=["accuracy"]) == ["accuracy-2", "rm-checkpoint-20", "rm-checkpoint-20-2"]


def test_sharded_offloaded_and_unknown_reward_models_in_the_estimate():
    from tunewise.plan.grpo_memory import GrpoSettings, estimate_grpo_memory, format_grpo_memory

    tiny = {"model_type": "qwen2", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 1000, "tie_word_embeddings": True}
    base = dict(train_type="full", weight_dtype="bfloat16", generation_batch=8, batch_size=8, prompt_length=16,
                completion_length=16, reward_model_bytes=8_000, reward_scoring_per_token=100)
    alone = estimate_grpo_memory(tiny, GrpoSettings(**base))
    assert alone.parts["reward_models"] == 8_000
    assert alone.phases["reward_scoring"] == {"reward_model_layer": 8 * 32 * 100}
    assert "reward models scoring (8 completions x 32 tokens)" in format_grpo_memory(alone)
    sharded = estimate_grpo_memory(tiny, GrpoSettings(**base, zero_stage=3, world_size=4))
    assert sharded.parts["reward_models"] == 2_000
    offloaded = estimate_grpo_memory(tiny, GrpoSettings(**base, zero_stage=3, world_size=4, offload_params=True))
    assert "reward_models" not in offloaded.parts and any("offloaded to CPU" in n for n in offloaded.notes)
    unknown = estimate_grpo_memory(tiny, GrpoSettings(**base, reward_models_not_estimated=("Qwen/rm",)))
    assert any("reward models not estimated" in n and "Qwen/rm" in n for n in unknown.notes)
