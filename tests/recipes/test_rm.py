"""`tunewise rlhf --rlhf_type rm` (tunewise.recipes.rm): the model is a one-output sequence classifier with the
tokenizer's pad token in its config; the loss is TRL's Bradley-Terry loss with the flags' centring term and the rows'
margins; a LoRA or full checkpoint loads back as the reward model it was (the score head saved with the adapter);
an SFT adapter keeps training; bad rows and flags stop before anything is written; the plan and the web UI's stage.
The held-out accuracy rising on the built-in pairs: tests/recipes/test_rm_accuracy.py."""
import json
import shlex
import shutil

import pytest

from cli_runs import run_cli


def trainer_for(tmp_path, *flags):
    from tunewise.args import RmArgs
    from tunewise.flags import parse
    from tunewise.plan.resolve import resolve
    from tunewise.recipes.rm import RECIPE
    from tunewise.train.build import build_trainer

    args, sources, _ = parse(RmArgs, ["--dataset", "concise#8", "--report_to", "none", "--output_dir",
                                      str(tmp_path / "run"), *flags])
    return build_trainer(resolve(RECIPE, args, sources), tmp_path / "run", callbacks=[])


def heldout_rows(n=6):
    from tunewise.data.preference import load_preferences, trl_row

    return [trl_row(c) for c in load_preferences(["concise_heldout"])[:n]]


def test_the_loss_is_bradley_terry_with_the_centring_term_and_the_rows_margins(tmp_path):
    """RewardTrainer's loss from the flags, on rewards read off the model itself: -log sigmoid(r_c - r_r - margin)
    + coefficient * mean((r_c + r_r)^2); the model has one output and the tokenizer's pad token."""
    import torch
    import torch.nn.functional as F

    from tunewise.data.template import template_ids
    from tunewise.recipes.rm import pair_rewards

    trainer = trainer_for(tmp_path, "--center_rewards_coefficient", "0.5", "--max_steps", "1")
    model, tokenizer = trainer.model, trainer.processing_class
    assert model.config.num_labels == 1 and model.config.pad_token_id == tokenizer.pad_token_id
    assert trainer.args.center_rewards_coefficient == 0.5
    model.eval()
    with torch.no_grad():  # a head that tells the pairs apart (the new one's rewards are all near 0)
        head = dict(model.named_parameters())["base_model.model.score.modules_to_save.default.weight"]
        torch.nn.init.normal_(head, std=0.5)
    rows = heldout_rows(2)
    rewards = pair_rewards(model, tokenizer, rows)
    chosen, rejected = rewards[:, 0], rewards[:, 1]
    ids = [[template_ids(tokenizer, r["prompt"] + r[side]) for side in ("chosen", "rejected")] for r in rows]
    batch = trainer.data_collator([{"chosen_ids": c, "rejected_ids": r, "margin": m}
                                   for (c, r), m in zip(ids, (0.25, -0.5))])
    margins = torch.tensor([0.25, -0.5])
    expected = -F.logsigmoid(chosen - rejected - margins).mean() + 0.5 * ((chosen + rejected) ** 2).mean()
    with torch.no_grad():
        loss = trainer.compute_loss(model, batch)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_rows_margins_reach_the_dataset_and_a_missing_one_names_its_line(tmp_path):
    from tunewise.data.preference import load_preferences
    from tunewise.errors import UserError
    from tunewise.models.load import load_tokenizer, resolve_model
    from tunewise.recipes.rm import encode

    tokenizer = load_tokenizer(resolve_model("tunewise-tiny"))
    data = tmp_path / "m.jsonl"
    long = "x " * 600
    data.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b", "margin": 1}) + "\n"
                    + json.dumps({"prompt": "q", "chosen": long, "rejected": "b", "margin": 2}) + "\n"
                    + json.dumps({"prompt": "r", "chosen": "c", "rejected": "d", "margin": 0.5}) + "\n")
    rows, stats = encode(tokenizer, load_preferences([str(data)]), None, 64)
    assert [r["margin"] for r in rows] == [1.0, 0.5] and stats.deleted_too_long == 1  # the long pair's margin goes
    data.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b", "margin": 1}) + "\n"
                    + json.dumps({"prompt": "r", "chosen": "c", "rejected": "d"}) + "\n")
    with pytest.raises(UserError, match=f"{data}:2: no 'margin' field, where {data}:1 has one"):
        encode(tokenizer, load_preferences([str(data)]), None, 64)
    rows, _ = encode(tokenizer, load_preferences(["concise#3"]), None, 512)
    assert "margin" not in rows[0]  # no margins: TRL's loss without one


@pytest.mark.parametrize("train_type", ["lora", pytest.param("full", marks=pytest.mark.slow)])  # full: ~15 s
def test_a_checkpoint_loads_back_as_the_reward_model_it_was(tmp_path, train_type):
    """After a few steps the saved checkpoint (LoRA: an adapter with the score head in it) loads as a sequence
    classifier that gives the trained model's rewards, not those of a new head."""
    import torch
    from safetensors import safe_open

    from tunewise.recipes.rm import load_reward_model, pair_rewards

    trainer = trainer_for(tmp_path, "--train_type", train_type, "--max_steps", "2", "--learning_rate", "1e-2",
                          "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1")
    trainer.train()
    rows = heldout_rows()
    trained = pair_rewards(trainer.model.eval(), trainer.processing_class, rows)
    trainer.save_model(str(tmp_path / "ckpt"))
    if train_type == "lora":
        with safe_open(tmp_path / "ckpt" / "adapter_model.safetensors", "pt") as f:
            assert any(".score." in key for key in f.keys())
        adapter = json.loads((tmp_path / "ckpt" / "adapter_config.json").read_text())
        assert adapter["task_type"] == "SEQ_CLS" and "score" in adapter["modules_to_save"]
    else:
        assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["architectures"] == \
            ["Qwen2ForSequenceClassification"]
    model, tokenizer = load_reward_model([str(tmp_path / "ckpt")], "tunewise-tiny" if train_type == "lora" else None)
    loaded = pair_rewards(model, tokenizer, rows)
    assert torch.allclose(loaded, trained, atol=1e-5), (loaded, trained)
    untrained, _ = load_reward_model([], "tunewise-tiny")
    assert not torch.allclose(pair_rewards(untrained, tokenizer, rows), trained, atol=1e-3)


def test_an_sft_adapter_keeps_training_with_the_score_head_beside_it(tmp_path):
    """--adapters CKPT (a causal-LM LoRA from sft) with LoRA: its LoRA weights are the ones that train, from their
    saved values, and the score head trains with them; nothing else does."""
    import torch
    from peft import LoraConfig, get_peft_model

    from tunewise.models.load import load_model, resolve_model

    torch.manual_seed(0)
    sft = get_peft_model(load_model(resolve_model("tunewise-tiny")),
                         LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in sft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01)
    saved = {n.replace("base_model.model.", ""): p.detach().clone() for n, p in sft.named_parameters() if "lora_" in n}
    sft.save_pretrained(tmp_path / "sft")
    trainer = trainer_for(tmp_path, "--adapters", str(tmp_path / "sft"), "--model", "tunewise-tiny")
    trained = {n.replace("base_model.model.", ""): p for n, p in trainer.model.named_parameters() if p.requires_grad}
    lora = {n: p for n, p in trained.items() if "lora_" in n}
    assert lora.keys() == saved.keys() and all(torch.equal(lora[n], saved[n]) for n in saved)
    assert {n for n in trained if n not in lora} == {"score.modules_to_save.default.weight"}


def test_full_training_from_an_sft_adapter_merges_it_and_trains_every_weight(tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model

    from tunewise.models.load import load_model, resolve_model

    torch.manual_seed(0)
    sft = get_peft_model(load_model(resolve_model("tunewise-tiny")),
                         LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in sft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    sft.save_pretrained(tmp_path / "sft")
    merged = sft.merge_and_unload().model.layers[0].self_attn.q_proj.weight.detach().clone()
    model = trainer_for(tmp_path, "--adapters", str(tmp_path / "sft"), "--model", "tunewise-tiny", "--train_type",
                        "full").model
    assert type(model).__name__ == "Qwen2ForSequenceClassification"  # no peft wrapper left
    assert torch.allclose(model.model.layers[0].self_attn.q_proj.weight, merged, atol=1e-6)
    assert all(p.requires_grad for p in model.parameters())


def test_a_model_config_without_pad_token_id_gets_the_tokenizers_and_says_so(tmp_path, capsys):
    from tunewise.models.checkpoint import open_checkpoint
    from tunewise.models.load import resolve_model
    from tunewise.recipes.rm import reward_model

    model_dir = tmp_path / "nopad"
    shutil.copytree(resolve_model("tunewise-tiny"), model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    del config["pad_token_id"]
    (model_dir / "config.json").write_text(json.dumps(config))
    checkpoint = open_checkpoint(str(model_dir))
    tokenizer = checkpoint.load_tokenizer()
    model = reward_model(checkpoint, tokenizer)
    assert model.config.pad_token_id == tokenizer.pad_token_id is not None
    assert f"set to the tokenizer's pad token {tokenizer.pad_token!r}" in capsys.readouterr().out


def test_the_plan_counts_pairs(tmp_path, capsys):
    out = tmp_path / "plan"
    assert run_cli("plan", "--rlhf_type", "rm", "--dataset", "concise", "--output_dir", out) == 0
    assert "train data: 195/195 pairs kept" in capsys.readouterr().out
    assert (out / "plan.json").is_file()


@pytest.mark.parametrize("rows, message", [
    ([{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}],
     "{data}:1: missing field 'rejected_response'"),
    ([{"prompt": "q", "chosen": "a", "rejected": "b"}, {"prompt": "q", "chosen": "a"}],
     "{data}:2: missing field 'rejected'"),
    ([{"prompt": "q", "chosen": "a", "rejected": "b", "margin": "big"}], "{data}:1: field 'margin' must be a number"),
])
def test_bad_rows_exit_2_naming_the_line_and_write_nothing(tmp_path, capsys, rows, message):
    data = tmp_path / "bad.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert run_cli("rlhf", "--rlhf_type", "rm", "--dataset", data, "--output_dir", tmp_path / "o") == 2
    assert message.format(data=data) in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv, message", [
    (["--beta", "0.1"], "Unknown flag --beta."),
    (["--loss_type", "sigmoid"], "Unknown flag --loss_type."),
    (["--ref_model", "tunewise-tiny"], "Unknown flag --ref_model."),
    (["--center_rewards_coefficient", "-0.01"], "--center_rewards_coefficient -0.01: must be >= 0."),
    (["--truncation_strategy", "right"], "--truncation_strategy right: rm scores whole sequences"),
    (["--packing", "true"], "--packing true: an sft option; rm pads its preference pairs"),
    (["--quant_bits", "4"], "--quant_bits 4: rm does not train on a quantized base yet"),
])
def test_bad_flags_exit_2_naming_the_flag_and_write_nothing(tmp_path, capsys, argv, message):
    assert run_cli("rlhf", "--rlhf_type", "rm", *argv, "--dataset", "concise", "--output_dir", tmp_path / "o") == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_the_web_uis_rm_stage_runs_the_rm_command():
    from tunewise.args import RmArgs
    from tunewise.flags import parse
    from tunewise.webui.commands import TRAIN_FIELDS, train_command
    from tunewise.webui.stages import STAGES

    form = {name: "" for name in TRAIN_FIELDS}
    form.update(stage="rm", model="tunewise-tiny", train_type="lora", pref_dataset="concise", max_steps=-1,
                adapters="output/v0/checkpoint-8", extra="--center_rewards_coefficient 0.01")
    command, argv = train_command(form)
    assert command == "rlhf" and argv[:2] == ["--rlhf_type", "rm"], shlex.join(argv)
    args = parse(STAGES["rm"].args_class, argv[2:])[0]
    assert isinstance(args, RmArgs) and args.dataset == ["concise"]
    assert args.center_rewards_coefficient == 0.01 and args.adapters == ["output/v0/checkpoint-8"]


@pytest.mark.slow  # two short runs, 30-60 s on the shared cores
def test_a_resumed_run_repeats_the_uninterrupted_one(tmp_path):
    """The shared run path: checkpoints every 2 steps, logging.jsonl with TRL's accuracy and margin, TensorBoard;
    resuming from checkpoint-2 gives step 4's loss and checkpoint-4's rewards again."""
    import torch

    from cli_runs import read_log
    from tunewise.recipes.rm import load_reward_model, pair_rewards

    out = tmp_path / "run"
    flags = ["rlhf", "--rlhf_type", "rm", "--dataset", "concise#24", "--per_device_train_batch_size", "4",
             "--gradient_accumulation_steps", "1", "--max_steps", "4", "--save_steps", "2", "--logging_steps", "1",
             "--learning_rate", "5e-3", "--report_to", "tensorboard", "--add_version", "false", "--output_dir", out]
    assert run_cli(*flags) == 0
    first = {r["step"]: r for r in read_log(out) if "loss" in r}
    assert {"accuracy", "margin", "mean_reward"} <= first[4].keys()
    assert (out / "checkpoint-2").is_dir() and any((out / "runs").iterdir())
    rows = heldout_rows()
    rewards = pair_rewards(*load_reward_model([str(out / "checkpoint-4")]), rows)
    assert run_cli(*flags, "--resume_from_checkpoint", out / "checkpoint-2") == 0
    resumed = {r["step"]: r for r in read_log(out) if "loss" in r}
    assert resumed[4]["train_runtime"] != first[4]["train_runtime"]  # steps 3 and 4 were trained and logged again
    assert resumed[4]["loss"] == pytest.approx(first[4]["loss"], rel=1e-5)
    assert torch.allclose(pair_rewards(*load_reward_model([str(out / "checkpoint-4")]), rows), rewards, atol=1e-5)


def test_chat_commands_refuse_a_reward_model_instead_of_dropping_its_head(tmp_path, capsys):
    """infer (and every command that loads a chat model: export, eval, serve, dpo's --adapters) stops with exit 2 on
    an rm checkpoint, LoRA or full, rather than generate from its backbone without the score head."""
    from peft import get_peft_model

    from tunewise.args import RmArgs
    from tunewise.flags import parse
    from tunewise.models.checkpoint import open_checkpoint
    from tunewise.recipes.rm import reward_lora_config, reward_model

    checkpoint = open_checkpoint("tunewise-tiny")
    tokenizer = checkpoint.load_tokenizer()
    model = reward_model(checkpoint, tokenizer)
    model.save_pretrained(tmp_path / "full")
    tokenizer.save_pretrained(tmp_path / "full")
    get_peft_model(model, reward_lora_config(parse(RmArgs, [])[0])).save_pretrained(tmp_path / "lora")
    for flags in (["--adapters", tmp_path / "lora"], ["--model", tmp_path / "full"]):
        assert run_cli("infer", *flags, "--query", "hi") == 2
        assert "a reward model (a sequence classifier" in capsys.readouterr().err
