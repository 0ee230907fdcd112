import json
import math

import pytest

from base_models import constant_lm
from cli_runs import read_log, run_cli


# ------------------------------------------------------------------------------------------------- loss by hand
P = (0.4, 0.3, 0.2, 0.1)  # the policy's next-token distribution at every position; the reference is uniform (1/4)
CHOSEN, REJECTED = [0, 1], [2, 3, 3]


def hand_values(beta):
    """Worked out from P: log-ratios against the uniform reference, then the DPO formulas."""
    chosen = math.log(0.4 * 0.3 / 0.25 ** 2)              # log 1.92
    rejected = math.log(0.2 * 0.1 * 0.1 / 0.25 ** 3)      # log 0.128
    return {
        "sigmoid": math.log(1 + 15 ** -beta),              # -log sigmoid(beta * log(1.92 / 0.128)), 1.92/0.128 = 15
        "ipo": (chosen / 2 - rejected / 3 - 1 / (2 * beta)) ** 2,  # per-token averages, target 1/(2 beta)
        "nll": -(math.log(0.4) + math.log(0.3)) / 2,       # TRL's "sft" loss: mean NLL of the chosen tokens
        "rewards/chosen": beta * chosen, "rewards/rejected": beta * rejected, "rewards/margins": beta * math.log(15),
    }


@pytest.mark.parametrize("flags, expected", [
    ({}, lambda h: h["sigmoid"]),
    ({"beta": 0.5}, lambda h: h["sigmoid"]),
    ({"loss_type": ["ipo"]}, lambda h: h["ipo"]),
    ({"rpo_alpha": 0.5}, lambda h: h["sigmoid"] + 0.5 * h["nll"]),
])
def test_trl_dpo_loss_matches_hand_computation(tmp_path, flags, expected):
    import torch
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from tunewise.models.load import load_tokenizer, resolve_model
    from tunewise.args import DpoArgs

    args = DpoArgs(**flags)
    loss_type, loss_weights = args.losses()
    config = DPOConfig(output_dir=str(tmp_path), beta=args.beta, loss_type=loss_type, loss_weights=loss_weights,
                       bf16=False, gradient_checkpointing=False, report_to=[], use_cpu=True)
    trainer = DPOTrainer(model=constant_lm(P), ref_model=constant_lm(None), args=config,
                         train_dataset=Dataset.from_list([{"prompt": "a", "chosen": "b", "rejected": "c"}]),
                         processing_class=load_tokenizer(resolve_model("tunewise-tiny")))
    # one prompt token (3), then the chosen [0, 1] or the rejected [2, 3, 3] completion; right padding
    batch = {"input_ids": torch.tensor([[3, *CHOSEN, 0], [3, *REJECTED]]),
             "attention_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]]),
             "completion_mask": torch.tensor([[0, 1, 1, 0], [0, 1, 1, 1]])}
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch)
    hand = hand_values(args.beta)
    assert loss.item() == pytest.approx(expected(hand), rel=1e-5)
    logged = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins"):
        assert logged[key] == pytest.approx(hand[key], rel=1e-5), key
    assert logged["rewards/accuracies"] == 1.0


# ------------------------------------------------------------------------------------------------- runs
@pytest.mark.slow
def test_dpo_on_the_builtin_set_learns_the_preference_and_keeps_the_rest(tmp_path, capsys):
    """The issue's check with the model's recommended DPO values (3 epochs of `concise`, 39 steps): the held-out
    implicit-reward accuracy rises from 0 (every pair a tie); identity and additions kept. Measured over seeds 42/1/2
    (avx512) and seed 42 on avx2 and default: implicit reward 0.909-0.955 (mean 0.927, spread 0.045), identity 100 %
    in every run, additions 0.925-0.935 against the base's 0.92 (spread 0.01). Each bound sits at least 3x its
    spread below the mean."""
    assert run_cli("dpo", "--dataset", "concise", "--logging_steps", 5, "--report_to", "none",
                   "--output_dir", tmp_path, "--add_version", "false") == 0
    saved = json.loads((tmp_path / "args.json").read_text())
    assert saved["command"] == "dpo" and saved["args"]["beta"] == 0.1 and saved["sources"]["learning_rate"] == "model"
    for name in ("plan.json", "lr_plan.png", "logging.jsonl", "loss.png", "lr.png"):
        assert (tmp_path / name).is_file(), name
    train = [r for r in read_log(tmp_path) if "loss" in r]
    assert all(r["lr"] == pytest.approx(r["planned_lr"], rel=1e-9) for r in train)  # the schedule guard's check
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"):
        assert all(key in r for r in train), key
    assert train[0]["rewards/margins"] == 0 and train[-1]["rewards/margins"] > 0
    capsys.readouterr()
    assert run_cli("eval", "--adapters", (tmp_path / "last").resolve(), "--model_name", "小维", "TinyWise",
                   "--model_author", "图维实验室", "Tunewise Labs", "--preference_dataset", "concise_heldout",
                   "--output", tmp_path / "eval.json") == 0
    metrics = json.loads((tmp_path / "eval.json").read_text())["models"][0]["metrics"]
    assert metrics["preference_implicit_reward_accuracy"] >= 0.75, metrics
    assert metrics["identity_accuracy"] >= 0.95, metrics
    assert metrics["general_accuracy"] >= metrics["general_accuracy_base"] - 0.05, metrics


def test_lora_dpo_keeps_one_copy_of_the_base_weights(tmp_path):
    """LoRA: no reference model; the reference is the policy with its adapter disabled (or, after --adapters, a
    frozen copy of the adapter): the base weights exist once. Full training keeps a frozen second model."""
    from tunewise.args import DpoArgs
    from tunewise.flags import parse
    from tunewise.models.load import load_model, resolve_model
    from tunewise.recipes.dpo import RECIPE as DPO
    from tunewise.train.build import build_trainer
    from tunewise.plan.resolve import resolve

    base_numel = sum(p.numel() for p in load_model(resolve_model("tunewise-tiny")).parameters())

    def trainer_for(*flags):
        args, sources, _ = parse(DpoArgs, ["--dataset", "concise#4", "--max_steps", "4", "--report_to", "none",
                                           "--output_dir", str(tmp_path), *flags])
        return build_trainer(resolve(DPO, args, sources), tmp_path, callbacks=[])

    trainer = trainer_for()
    assert trainer.ref_model is None
    params = dict(trainer.model.named_parameters())
    assert sum(p.numel() for n, p in params.items() if "lora_" not in n) == base_numel
    assert not any(p.requires_grad for n, p in params.items() if "lora_" not in n)

    full = trainer_for("--train_type", "full")
    assert full.ref_model is not None and full.ref_model is not full.model
    assert not any(p.requires_grad for p in full.ref_model.parameters())


@pytest.mark.slow
def test_sft_then_dpo_then_infer(tmp_path, capsys):
    sft_out, dpo_out = tmp_path / "sft", tmp_path / "dpo"
    assert run_cli("sft", "--dataset", "self_cognition", "--model_name", "小黄", "Xiao Huang", "--model_author", "魔搭",
                   "ModelScope", "--max_steps", 100, "--save_steps", 1000, "--report_to", "none",
                   "--output_dir", sft_out, "--add_version", "false") == 0
    sft_ckpt = (sft_out / "last").resolve()
    assert run_cli("dpo", "--adapters", sft_ckpt, "--dataset", "concise#16", "--max_steps", 4, "--logging_steps", 1,
                   "--save_steps", 1000, "--report_to", "none", "--output_dir", dpo_out, "--add_version", "false") == 0
    saved = json.loads((dpo_out / "args.json").read_text())
    assert saved["args"]["model"] == "tunewise-tiny" and saved["sources"]["model"] == "adapters"
    first = read_log(dpo_out)[0]
    # before the first update the policy is the SFT adapter and so is the reference: rewards are exactly zero
    assert first["step"] == 1 and first["rewards/chosen"] == 0 and first["rewards/rejected"] == 0
    dpo_ckpt = (dpo_out / "last").resolve()
    assert (dpo_ckpt / "adapter_model.safetensors").is_file()
    capsys.readouterr()
    assert run_cli("infer", "--adapters", dpo_ckpt, "--query", "你是谁？", "--stream", "false",
                   "--max_new_tokens", 40) == 0
    assert capsys.readouterr().out.strip()


@pytest.mark.parametrize("flags, message", [
    (["--loss_type", "sigmoid,nope"], "--loss_type nope"),
    (["--loss_type", "exo_pair"], "exo_pair needs --label_smoothing"),
    (["--beta", "0"], "--beta 0.0: must be positive"),
    (["--loss_type", "ipo", "--loss_weights", "1,2"], "--loss_weights has 2 values for 1 loss types"),
])
def test_bad_dpo_flags_are_reported(tmp_path, flags, message, capsys):
    assert run_cli("dpo", "--dataset", "concise", "--output_dir", tmp_path / "o", *flags) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_bad_preference_data_fails_with_file_line_and_exit_2(tmp_path, capsys):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n{"prompt": "q", "chosen": "a"}\n',
                    encoding="utf-8")
    assert run_cli("dpo", "--dataset", data, "--output_dir", tmp_path / "o") == 2
    assert f"{data}:2: missing field 'rejected'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
