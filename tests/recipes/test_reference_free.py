"""`tunewise rlhf --rlhf_type orpo|simpo|cpo` (tunewise.recipes.orpo, simpo, cpo): each loss as TRL computes it from
the flags, worked out by hand; one model and no reference in the trainer; the plan; bad flags stop before anything is
written. Their margins rising on the built-in pairs: tests/recipes/test_margins.py."""
import json
import math

import pytest

from base_models import constant_lm
from cli_runs import run_cli

P = (0.4, 0.3, 0.2, 0.1)  # the policy's next-token distribution at every position (base_models.constant_lm)
# prompt token 3, then the chosen [0, 1] (right-padded) or the rejected [2, 3, 3] reply
C_SUM, R_SUM = math.log(0.4 * 0.3), math.log(0.2 * 0.1 * 0.1)
C_AVG, R_AVG = C_SUM / 2, R_SUM / 3
NLL = -C_AVG  # mean NLL of the chosen reply's tokens (ORPO's over prompt and reply: the prompt's token is not predicted)


def log_sigmoid(x):
    return -math.log1p(math.exp(-x))


def log1mexp(x):
    return math.log(-math.expm1(x))


# (rlhf_type, flags, loss, rewards/margins), each from the formulas of the papers as TRL 1.16 implements them
CASES = [
    ("cpo", [], -log_sigmoid(0.1 * (C_SUM - R_SUM)) + NLL, 0.1 * (C_SUM - R_SUM)),
    ("cpo", ["--beta", "0.5", "--cpo_alpha", "0"], -log_sigmoid(0.5 * (C_SUM - R_SUM)), 0.5 * (C_SUM - R_SUM)),
    ("cpo", ["--loss_type", "hinge"], max(0.0, 1 - 0.1 * (C_SUM - R_SUM)) + NLL, 0.1 * (C_SUM - R_SUM)),
    ("cpo", ["--loss_type", "ipo"], (C_AVG - R_AVG - 1 / (2 * 0.1)) ** 2 + NLL, 0.1 * (C_AVG - R_AVG)),
    ("cpo", ["--loss_type", "simpo", "--simpo_gamma", "0.5"],  # CPO-SimPO: cpo's NLL weight stays 1
     -log_sigmoid(0.1 * (C_AVG - R_AVG) - 0.5) + NLL, 0.1 * (C_AVG - R_AVG)),
    ("simpo", [], -log_sigmoid(2.0 * (C_AVG - R_AVG) - 1.0), 2.0 * (C_AVG - R_AVG)),  # beta 2, gamma 1, no NLL
    ("simpo", ["--cpo_alpha", "1"], -log_sigmoid(2.0 * (C_AVG - R_AVG) - 1.0) + NLL, 2.0 * (C_AVG - R_AVG)),
    ("orpo", [], NLL - 0.1 * log_sigmoid((C_AVG - R_AVG) - (log1mexp(C_AVG) - log1mexp(R_AVG))),
     0.1 * (C_AVG - R_AVG)),
    ("orpo", ["--beta", "1"], NLL - log_sigmoid((C_AVG - R_AVG) - (log1mexp(C_AVG) - log1mexp(R_AVG))),
     C_AVG - R_AVG),
]


@pytest.mark.parametrize("kind, flags, loss, margin", CASES)
def test_the_trainer_computes_the_papers_loss_from_the_flags(tmp_path, kind, flags, loss, margin):
    """The recipe's trainer and config classes, with its config fields from the parsed flags, on a model whose
    log-probabilities are known: the loss and the logged reward margin are the hand-worked values."""
    import torch
    from datasets import Dataset

    from tunewise.flags import parse
    from tunewise.models.load import load_tokenizer, resolve_model
    from tunewise.recipes import recipe
    from tunewise.train.build import import_object

    chosen = recipe(kind)
    args, _, _ = parse(chosen.args_class, flags)
    config = import_object(chosen.config)(output_dir=str(tmp_path), bf16=False, use_cpu=True, report_to=[],
                                          **chosen.config_fields(args))
    trainer = import_object(chosen.trainer)(
        model=constant_lm(P), args=config, processing_class=load_tokenizer(resolve_model("tunewise-tiny")),
        train_dataset=Dataset.from_list([{"prompt": "a", "chosen": "b", "rejected": "c"}]))
    batch = {"chosen_input_ids": torch.tensor([[3, 0, 1, 0]]), "chosen_attention_mask": torch.tensor([[1, 1, 1, 0]]),
             "chosen_labels": torch.tensor([[-100, 0, 1, -100]]), "rejected_input_ids": torch.tensor([[3, 2, 3, 3]]),
             "rejected_attention_mask": torch.tensor([[1, 1, 1, 1]]),
             "rejected_labels": torch.tensor([[-100, 2, 3, 3]])}
    trainer.model.train()
    assert trainer.compute_loss(trainer.model, batch).item() == pytest.approx(loss, rel=1e-5)
    logged = {k: v[-1] for k, v in trainer._stored_metrics["train"].items()}
    assert logged["rewards/margins"] == pytest.approx(margin, rel=1e-5)
    assert logged["rewards/accuracies"] == 1.0


@pytest.mark.parametrize("kind", ["orpo", "simpo", "cpo"])
def test_one_model_and_no_reference(tmp_path, kind):
    """LoRA from the base model: one copy of the base weights, frozen, under a new adapter; full: the model trains
    whole. The trainer holds no reference model."""
    from tunewise.flags import parse
    from tunewise.models.load import load_model, resolve_model
    from tunewise.plan.resolve import resolve
    from tunewise.recipes import recipe
    from tunewise.train.build import build_trainer

    chosen = recipe(kind)
    base_numel = sum(p.numel() for p in load_model(resolve_model("tunewise-tiny")).parameters())

    def trainer_for(*flags):
        args, sources, _ = parse(chosen.args_class, ["--dataset", "concise#4", "--max_steps", "2", "--report_to",
                                                     "none", "--output_dir", str(tmp_path), *flags])
        return build_trainer(resolve(chosen, args, sources), tmp_path, callbacks=[])

    lora = trainer_for()
    assert getattr(lora, "ref_model", None) is None
    params = dict(lora.model.named_parameters())
    assert sum(p.numel() for n, p in params.items() if "lora_" not in n) == base_numel
    assert not any(p.requires_grad for n, p in params.items() if "lora_" not in n)
    assert any(p.requires_grad for n, p in params.items() if "lora_" in n)
    full = trainer_for("--train_type", "full")
    assert sum(p.numel() for p in full.model.parameters() if p.requires_grad) == base_numel


def test_an_sft_adapter_keeps_training_under_cpo(tmp_path):
    """--adapters CKPT with LoRA: the checkpoint's adapter is the one that trains (no second adapter), from its saved
    values, on frozen base weights."""
    import torch
    from peft import LoraConfig, get_peft_model

    from tunewise.args import CpoArgs
    from tunewise.flags import parse
    from tunewise.models.load import load_model, resolve_model
    from tunewise.plan.resolve import resolve
    from tunewise.recipes.cpo import RECIPE as CPO
    from tunewise.train.build import build_trainer

    torch.manual_seed(0)
    sft = get_peft_model(load_model(resolve_model("tunewise-tiny")),
                         LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in sft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01)  # a trained adapter's B is not zero
    saved = {n: p.detach().clone() for n, p in sft.named_parameters() if "lora_" in n}
    sft.save_pretrained(tmp_path / "sft")
    args, sources, _ = parse(CpoArgs, ["--adapters", str(tmp_path / "sft"), "--dataset", "concise#4", "--report_to",
                                       "none", "--output_dir", str(tmp_path / "run")])
    trainer = build_trainer(resolve(CPO, args, sources), tmp_path / "run", callbacks=[])
    trained = {n: p for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trained.keys() == saved.keys()
    assert all(torch.equal(trained[n], saved[n]) for n in saved)


@pytest.mark.parametrize("kind", ["orpo", "simpo", "cpo"])
def test_plan_shows_the_run_and_plans_memory_for_one_model(tmp_path, capsys, kind):
    out = tmp_path / "plan"
    assert run_cli("plan", "--rlhf_type", kind, "--dataset", "concise", "--output_dir", out) == 0
    printed = capsys.readouterr().out
    assert "train data: 195/195 pairs kept" in printed and "total steps             39" in printed
    assert "memory estimate:" in printed
    memory = json.loads((out / "plan.json").read_text())["extra"]["memory"]
    # float32 on the CPU: the base weights once and the new adapter's, no reference model's
    assert memory["parts"]["weights"] == 4 * (memory["parameters"] + memory["trainable"])


@pytest.mark.parametrize("argv, message", [
    (["--rlhf_type", "orpo", "--beta", "0"], "--beta 0.0: must be positive (ORPO's lambda)."),
    (["--rlhf_type", "orpo", "--loss_type", "sigmoid"], "Unknown flag --loss_type."),
    (["--rlhf_type", "simpo", "--ref_model", "tunewise-tiny"], "Unknown flag --ref_model."),
    (["--rlhf_type", "simpo", "--loss_type", "sigmoid"], "use --rlhf_type cpo --loss_type sigmoid"),
    (["--rlhf_type", "simpo", "--simpo_gamma", "-1"], "--simpo_gamma -1.0: must be >= 0."),
    (["--rlhf_type", "cpo", "--loss_type", "kto"], "--loss_type kto: expected one of sigmoid, hinge, ipo, simpo."),
    (["--rlhf_type", "cpo", "--cpo_alpha", "-0.5"], "--cpo_alpha -0.5: must be >= 0."),
    (["--rlhf_type", "cpo", "--simpo_gamma", "0.5"], "SimPO's margin is used only with --loss_type simpo"),
])
def test_bad_flags_exit_2_naming_the_flag_and_write_nothing(tmp_path, capsys, argv, message):
    assert run_cli("rlhf", *argv, "--dataset", "concise", "--output_dir", tmp_path / "o") == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_bad_pair_is_reported_with_its_line(tmp_path, capsys):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n{"prompt": "q", "chosen": "a", "rejected": "a"}\n')
    assert run_cli("rlhf", "--rlhf_type", "orpo", "--dataset", data, "--output_dir", tmp_path / "o") == 2
    assert f"{data}:2: the chosen and rejected replies are identical" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("kind", ["orpo", "simpo", "cpo"])
def test_quant_bits_loads_the_policy_in_bitsandbytes_bits(tmp_path, kind):
    """--quant_bits (QLoRA) reaches the one model these trainers hold: its base linear layers are bitsandbytes'."""
    pytest.importorskip("bitsandbytes")
    import bitsandbytes as bnb

    from tunewise.flags import parse
    from tunewise.plan.resolve import resolve
    from tunewise.recipes import recipe
    from tunewise.train.build import build_trainer

    chosen = recipe(kind)
    args, sources, _ = parse(chosen.args_class, ["--dataset", "concise#4", "--max_steps", "1", "--report_to", "none",
                                                 "--quant_bits", "4", "--output_dir", str(tmp_path)])
    trainer = build_trainer(resolve(chosen, args, sources), tmp_path, callbacks=[])
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in trainer.model.modules())
