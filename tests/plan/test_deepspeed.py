"""Tests for tunewise.plan.deepspeed: "auto" filling identical to transformers' HfTrainerDeepSpeedConfig,
the scheduler/optimizer policy and its warnings, contradictions as UserError, and DeepSpeedSchedule bit-exact against
deepspeed's own scheduler classes.

Step/LR mapping under test for a kept DeepSpeed scheduler: the engine steps it inside ``backward`` before the Trainer
reads ``get_last_lr()``, so ``lr_at(N)`` = ``get_last_lr()[0]`` after ``N`` calls to ``step()`` = the optimizer's
param-group LR at that moment; ``used_lr_at(N)`` is what the optimizer held before the N-th ``step()``.
"""
import copy
import json
import math
from types import SimpleNamespace

import pytest

from tunewise.errors import UserError
from tunewise.plan.deepspeed import BUILTIN_CONFIGS, DeepSpeedSchedule, load_config, reconcile
from tunewise.plan.report import format_plan, write_plan_files
from tunewise.plan.schedule import make_schedule, plan_steps

LR, T, W = 1e-4, 40, 4
FLAGS = {"learning_rate": LR, "weight_decay": 0.1, "per_device_train_batch_size": 1, "gradient_accumulation_steps": 16,
         "max_grad_norm": 1.0, "torch_dtype": "float32", "lr_scheduler_type": "cosine"}
ISSUE_SCHEDULER = {"type": "WarmupLR",
                   "params": {"warmup_min_lr": "auto", "warmup_max_lr": "auto", "warmup_num_steps": "auto"}}
AUTO_OPTIMIZER = {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"}}


def write(tmp_path, config, name="ds.json"):
    path = tmp_path / name
    path.write_text(json.dumps(config))
    return str(path)


def zero3_with(tmp_path, **blocks):
    config, _ = load_config("zero3")
    config.update(copy.deepcopy(blocks))
    return write(tmp_path, config)


def run(spec, keep=False, flags=None, world_size=2, total=T, warmup=W):
    return reconcile(spec, {**FLAGS, **(flags or {})}, world_size, total, warmup, keep)


# ---------------------------------------------------------------- built-in configs and "auto" filling
@pytest.mark.parametrize("name", sorted(BUILTIN_CONFIGS))
def test_builtin_configs_fill_auto_from_flags(name):
    r = run(name, world_size=2)
    c = r.config
    assert (c["train_micro_batch_size_per_gpu"], c["gradient_accumulation_steps"], c["train_batch_size"]) == (1, 16, 32)
    assert c["gradient_clipping"] == 1.0 and c["bf16"]["enabled"] is False and c["fp16"]["enabled"] is False
    assert "optimizer" not in c and "scheduler" not in c
    assert r.warnings == [] and r.sources == {} and r.schedule_override is None
    assert r.zero_stage == (2 if name == "zero2" else 3)
    if r.zero_stage == 3:  # needs the model's hidden size: left to the Trainer
        assert c["zero_optimization"]["stage3_prefetch_bucket_size"] == "auto"
    if name == "zero3_offload":
        assert c["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
        assert c["zero_force_ds_cpu_optimizer"] is False


def test_reconcile_does_not_touch_the_loaded_file(tmp_path):
    path = zero3_with(tmp_path, scheduler=ISSUE_SCHEDULER)
    before = open(path).read()
    run(path)
    assert open(path).read() == before


@pytest.mark.parametrize("dtype,bf16,fp16", [("bfloat16", True, False), ("float16", False, True),
                                             ("float32", False, False), ("auto", False, False)])
def test_dtype_fills_bf16_fp16(dtype, bf16, fp16):
    c = run("zero2", flags={"torch_dtype": dtype}).config
    assert (c["bf16"]["enabled"], c["fp16"]["enabled"]) == (bf16, fp16)
    # an explicit TrainingArguments value (sft.py: bf16 only with CUDA) wins over the dtype-derived default
    assert run("zero2", flags={"torch_dtype": "bfloat16", "bf16": False}).config["bf16"]["enabled"] is False


def _hf_args(flags, world_size, warmup):
    return SimpleNamespace(
        world_size=world_size, per_device_train_batch_size=flags["per_device_train_batch_size"],
        gradient_accumulation_steps=flags["gradient_accumulation_steps"], max_grad_norm=flags["max_grad_norm"],
        learning_rate=flags["learning_rate"], adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8,
        weight_decay=flags["weight_decay"], save_on_each_node=False, fp16=False, fp16_full_eval=False,
        bf16=False, bf16_full_eval=False, get_warmup_steps=lambda total: warmup)


@pytest.mark.parametrize("name", ["zero2", "zero3", "issue", "issue_keep", "cosine_keep"])
def test_agrees_with_transformers_filling(tmp_path, name):
    """transformers' own HfTrainerDeepSpeedConfig fills the original JSON exactly as we do (minus removed blocks),
    and finds nothing to change or reject in our result."""
    pytest.importorskip("accelerate")
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    sched = {"type": "WarmupCosineLR", "params": {"total_num_steps": "auto", "warmup_num_steps": "auto"}}
    spec = {"zero2": "zero2", "zero3": "zero3", "issue": zero3_with(tmp_path, scheduler=ISSUE_SCHEDULER),
            "issue_keep": zero3_with(tmp_path, scheduler=ISSUE_SCHEDULER, optimizer=AUTO_OPTIMIZER),
            "cosine_keep": zero3_with(tmp_path, scheduler=sched)}[name]
    keep = name.endswith("_keep")
    ours = run(spec, keep=keep).config
    args, model = _hf_args(FLAGS, 2, W), SimpleNamespace(config=SimpleNamespace(hidden_size=64))

    theirs = HfTrainerDeepSpeedConfig(load_config(spec)[0])
    theirs.trainer_config_process(args)
    theirs.trainer_config_finalize(args, model, T)
    expected = copy.deepcopy(theirs.config)
    expected.pop("optimizer", None)
    if not keep:
        expected.pop("scheduler", None)
    expected.pop("zero_allow_untested_optimizer", None)

    again = HfTrainerDeepSpeedConfig(copy.deepcopy(ours))
    again.trainer_config_process(args)
    again.trainer_config_finalize(args, model, T)  # raises ValueError on any mismatch
    assert again.mismatches == []
    assert again.config == expected  # ours + the Trainer's hidden-size fills == the Trainer alone


# ---------------------------------------------------------------- scheduler / optimizer policy
def test_issue_config_scheduler_and_optimizer_removed_with_one_warning(tmp_path):
    path = zero3_with(tmp_path, scheduler=ISSUE_SCHEDULER, optimizer=AUTO_OPTIMIZER)
    r = run(path)
    assert "scheduler" not in r.config and "optimizer" not in r.config
    assert r.schedule_override is None and r.sources == {}
    assert len(r.warnings) == 1
    w = r.warnings[0]
    for text in (path, '"scheduler" block', '"WarmupLR"', '"warmup_max_lr": "auto"', "flat at its peak",
                 '"optimizer" block', '"AdamW"', "--lr_scheduler_type cosine", "peak 0.0001",
                 f"{W} warm-up steps of {T}", "--deepspeed_scheduler keep"):
        assert text in w, text


def test_hard_coded_scheduler_values_are_shown_not_an_error_when_removed(tmp_path):
    sched = {"type": "WarmupDecayLR", "params": {"warmup_max_lr": 3e-5, "warmup_num_steps": 100,
                                                 "total_num_steps": 5000}}
    r = run(zero3_with(tmp_path, scheduler=sched))
    assert "scheduler" not in r.config
    assert '"warmup_num_steps": 100' in r.warnings[0] and "linear decay to 0" in r.warnings[0]


def test_keep_uses_the_json_scheduler_and_shows_its_flat_curve(tmp_path):
    r = run(zero3_with(tmp_path, scheduler=ISSUE_SCHEDULER), keep=True)
    assert r.config["scheduler"] == {"type": "WarmupLR", "params": {"warmup_min_lr": 0, "warmup_max_lr": LR,
                                                                     "warmup_num_steps": W}}
    s = r.schedule_override
    assert isinstance(s, DeepSpeedSchedule) and (s.scheduler, s.learning_rate, s.warmup_steps) == ("WarmupLR", LR, W)
    assert s.warmup_type == "log"  # transformers does not fill warmup_type: deepspeed's default applies
    assert all(s.lr_at(n) == LR for n in range(W + 1, T + 1))  # flat after warm-up: the issue's curve
    assert all(s.lr_at(n) < LR for n in range(0, W))  # log warm-up: g(W-1) = log(W)/log(W) is already the peak
    assert s.lr_at(W) == pytest.approx(LR, rel=1e-15)
    assert r.sources == {"scheduler": "deepspeed", "warmup_min_lr": "deepspeed"}
    assert len(r.warnings) == 1
    for text in ('"WarmupLR"', "--deepspeed_scheduler keep", "replaces --lr_scheduler_type cosine", "flat at 0.0001"):
        assert text in r.warnings[0], text
    assert s.trainer_kwargs()["warmup_steps"] == W and s.trainer_kwargs()["max_steps"] == T


def test_keep_zero_warmup_fills_one_like_transformers(tmp_path):
    s = run(zero3_with(tmp_path, scheduler=ISSUE_SCHEDULER), keep=True, warmup=0).schedule_override
    assert s.warmup_steps == 1 and s.effective_warmup == 2  # transformers fills max(1, 0); deepspeed uses max(2, .)


def test_keep_removes_the_optimizer_block_only(tmp_path):
    r = run(zero3_with(tmp_path, scheduler=ISSUE_SCHEDULER, optimizer=AUTO_OPTIMIZER), keep=True)
    assert "optimizer" not in r.config and "scheduler" in r.config
    assert len(r.warnings) == 2 and '"optimizer" block' in r.warnings[0]
    assert "flags decide the LR" not in r.warnings[0] and "--deepspeed_scheduler keep to" not in r.warnings[0]


def test_keep_without_scheduler_block_says_so():
    r = run("zero3", keep=True)
    assert r.schedule_override is None and "no \"scheduler\" block" in r.warnings[0]


@pytest.mark.parametrize("sched,needle", [
    ({"type": "OneCycle", "params": {}}, "not 'OneCycle'"),
    ({"type": "WarmupLR", "params": {"warmup_num_steps": "auto", "bogus": 1}}, "does not take bogus"),
])
def test_keep_rejects_unsupported_schedulers(tmp_path, sched, needle):
    with pytest.raises(UserError, match=needle):
        run(zero3_with(tmp_path, scheduler=sched), keep=True)


@pytest.mark.parametrize("params,needle", [
    ({"warmup_num_steps": 100, "warmup_max_lr": "auto"}, 'scheduler.params.warmup_num_steps = 100 but the plan\'s 4'),
    ({"warmup_num_steps": "auto", "warmup_max_lr": 3e-05},
     "scheduler.params.warmup_max_lr = 3e-05 but --learning_rate"),
    ({"warmup_max_lr": "auto"}, "warmup_num_steps is missing, so deepspeed warms up over 1000"),
    ({"warmup_num_steps": "auto", "warmup_min_lr": [0, 0]}, "per-group lists"),
])
def test_keep_contradictions_are_errors(tmp_path, params, needle):
    path = zero3_with(tmp_path, scheduler={"type": "WarmupLR", "params": params})
    with pytest.raises(UserError) as e:
        run(path, keep=True)
    assert path in str(e.value) and needle in str(e.value)
    run(path)  # the same block is merely removed (with its values in the warning) by default


def test_keep_warmup_decay_needs_total_steps_and_peak(tmp_path):
    path = zero3_with(tmp_path, scheduler={"type": "WarmupDecayLR", "params": {"warmup_num_steps": "auto"}})
    with pytest.raises(UserError) as e:
        run(path, keep=True)
    assert "total_num_steps is missing" in str(e.value) and "peaks at 0.001" in str(e.value)


# ---------------------------------------------------------------- contradictions with the flags
@pytest.mark.parametrize("key,value,needle", [
    ("train_micro_batch_size_per_gpu", 4,
     "train_micro_batch_size_per_gpu = 4 but --per_device_train_batch_size 1 gives 1"),
    ("gradient_accumulation_steps", 8, "gradient_accumulation_steps = 8 but --gradient_accumulation_steps 16 gives 16"),
    ("gradient_clipping", 0.5, "gradient_clipping = 0.5 but --max_grad_norm 1.0 gives 1.0"),
    ("train_batch_size", 64, "train_batch_size = 64 but world size 2 x --per_device_train_batch_size 1 x "
                             "--gradient_accumulation_steps 16 gives 32"),
    ("bf16", {"enabled": True}, "bf16.enabled = true but --torch_dtype float32 gives false"),
    ("optimizer", {"type": "AdamW", "params": {"lr": 3e-5}}, "optimizer.params.lr = 3e-05 but --learning_rate 0.0001"),
    ("optimizer", {"type": "AdamW", "params": {"betas": [0.9, 0.95]}}, "optimizer.params.betas = [0.9, 0.95]"),
    ("optimizer", {"type": "AdamW", "params": {"weight_decay": 0.0}}, "optimizer.params.weight_decay = 0.0"),
])
def test_contradictions_are_user_errors_naming_file_key_values(tmp_path, key, value, needle):
    path = zero3_with(tmp_path, **{key: value})
    with pytest.raises(UserError) as e:
        run(path)
    assert path in str(e.value) and needle in str(e.value)


def test_all_contradictions_reported_at_once(tmp_path):
    path = zero3_with(tmp_path, train_micro_batch_size_per_gpu=4, gradient_clipping=0.5)
    with pytest.raises(UserError) as e:
        run(path)
    assert "train_micro_batch_size_per_gpu = 4" in str(e.value) and "gradient_clipping = 0.5" in str(e.value)


def test_equal_hard_coded_values_are_fine(tmp_path):
    path = zero3_with(tmp_path, train_micro_batch_size_per_gpu=1, gradient_clipping=1, train_batch_size=32)
    assert run(path).config["gradient_clipping"] == 1


def test_offload_forced_ds_cpu_optimizer_is_an_error(tmp_path):
    config, _ = load_config("zero3_offload")
    config["zero_force_ds_cpu_optimizer"] = True
    with pytest.raises(UserError, match="zero_force_ds_cpu_optimizer"):
        run(write(tmp_path, config))


@pytest.mark.parametrize("text,needle", [("{", "invalid JSON at line 1, column 2"), ("[1]", "expected a JSON object")])
def test_bad_files(tmp_path, text, needle):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(UserError, match=needle):
        run(str(path))


def test_unknown_spec():
    with pytest.raises(UserError, match="not a built-in config .zero2, zero3, zero3_offload. and no such file"):
        run("zero9")


# ---------------------------------------------------------------- DeepSpeedSchedule vs deepspeed's classes
CASES = [(kind, wt, w, t, p) for kind in ("WarmupLR", "WarmupDecayLR", "WarmupCosineLR") for wt in ("log", "linear")
         for (w, t) in ((1, 12), (2, 12), (7, 30), (10, 10)) for p in ({}, {"min": 1})]


def _ds_scheduler(kind, wt, w, t, extra):
    torch = pytest.importorskip("torch")
    lr_schedules = pytest.importorskip("deepspeed.runtime.lr_schedules")
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=LR)
    if kind == "WarmupCosineLR":
        kw = {"warmup_min_ratio": 0.1, "cos_min_ratio": 0.05} if extra else {}
        sched = lr_schedules.WarmupCosineLR(opt, total_num_steps=t, warmup_num_steps=w, warmup_type=wt, **kw)
    else:
        kw = {"warmup_min_lr": 1e-6} if extra else {}
        total = {"total_num_steps": t} if kind == "WarmupDecayLR" else {}
        sched = getattr(lr_schedules, kind)(opt, warmup_max_lr=LR, warmup_num_steps=w, warmup_type=wt, **total, **kw)
    return opt, sched, DeepSpeedSchedule(kind, LR, w, t, {"warmup_type": wt, **kw})


@pytest.mark.parametrize("kind,wt,w,t,extra", CASES)
def test_matches_deepspeed_bit_for_bit(kind, wt, w, t, extra):
    opt, sched, ours = _ds_scheduler(kind, wt, w, t, extra)
    assert opt.param_groups[0]["lr"] == ours.lr_at(0)
    for n in range(1, t + 1):
        used = opt.param_groups[0]["lr"]  # what optimizer update n runs with (engine: step() after the update)
        assert used == ours.used_lr_at(n), n
        sched.step()
        assert sched.get_last_lr()[0] == ours.lr_at(n), n  # what the Trainer logs at global_step n
        assert opt.param_groups[0]["lr"] == ours.optimizer_lr_at(n), n


def test_unknown_warmup_type_falls_back_to_log_like_deepspeed():
    assert DeepSpeedSchedule("WarmupLR", LR, 8, 20, {"warmup_type": "auto"}).curve() == \
        DeepSpeedSchedule("WarmupLR", LR, 8, 20, {}).curve()


def test_hand_worked_values():
    s = DeepSpeedSchedule("WarmupLR", 1.0, 4, 10, {"warmup_type": "linear"})
    assert [lr for _, lr in s.curve()] == [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    d = DeepSpeedSchedule("WarmupDecayLR", 1.0, 4, 10, {"warmup_type": "linear"})
    assert d.lr_at(5) == 1.0 and d.lr_at(6) == 5 / 6 and d.lr_at(10) == 1 / 6  # (T - i) / (T - W), i = N - 1
    g = DeepSpeedSchedule("WarmupLR", 1.0, 4, 10, {})
    assert g.lr_at(3) == pytest.approx(math.log(3) / math.log(4), rel=1e-15)
    c = DeepSpeedSchedule("WarmupCosineLR", 1.0, 4, 12, {"warmup_type": "linear", "cos_min_ratio": 0.0})
    assert c.lr_at(0) == 0.0 and c.lr_at(5) == pytest.approx(1 - (1 - math.cos(math.pi / 8)) / 2) and c.lr_at(12) == 0.0
    assert s.key_points()["end_warmup"] == (5, 1.0)


def test_interface_matches_lr_schedule(tmp_path):
    plan = make_schedule("cosine", LR, T, W)
    ds = DeepSpeedSchedule("WarmupDecayLR", LR, W, T, {"warmup_type": "linear"})
    assert set(ds.key_points()) == set(plan.key_points()) - {"decay_start"}
    assert set(ds.trainer_kwargs()) == set(plan.trainer_kwargs())
    assert len(ds.curve()) == len(plan.curve()) == T + 1
    steps = plan_steps(T * 16, 1, 16)
    written = write_plan_files(tmp_path, steps, ds)
    assert written["schedule"]["scheduler"] == "WarmupDecayLR" and (tmp_path / "lr_plan.png").is_file()
    assert "WarmupDecayLR" in format_plan(steps, ds, {"scheduler": "deepspeed"})


def test_training_arguments_accept_the_dict():
    pytest.importorskip("deepspeed")
    from transformers import TrainingArguments

    config = run("zero2", world_size=1).config
    args = TrainingArguments(output_dir="unused", deepspeed=config, per_device_train_batch_size=1,
                             gradient_accumulation_steps=16, report_to=[],
                             **make_schedule("cosine", LR, T, W).trainer_kwargs())
    assert args.deepspeed == config and args.hf_deepspeed_config.config["train_batch_size"] == 16


def test_an_fp16_recipe_on_a_cpu_is_refused_for_the_machine_not_the_flag(tmp_path, capsys):
    """A ZeRO-3 offload JSON with "fp16": {"enabled": true} (as ms-swift's seed recipes write it) on a machine
    without CUDA: with --torch_dtype float16 the error says fp16 needs a CUDA GPU and what the recipe becomes on a
    CPU; with auto (float32 here) the contradiction names the machine as the reason, not the flag alone."""
    pytest.importorskip("deepspeed")
    import torch

    from cli_runs import run_cli

    if torch.cuda.is_available():
        pytest.skip("on a GPU the recipe runs as written")
    config = copy.deepcopy(load_config("zero3_offload")[0])
    config["fp16"] = {"enabled": True, "loss_scale": 0}
    path = write(tmp_path, config)
    base = ["--dataset", "self_cognition#8", "--model_name", "N", "--model_author", "A", "--deepspeed", path]
    assert run_cli("plan", *base, "--torch_dtype", "float16", "--output_dir", tmp_path / "a") == 2
    err = capsys.readouterr().err
    assert "fp16 mixed precision (its loss scaling) needs a CUDA GPU, and this machine has none" in err
    assert "--torch_dtype float32" in err and '"enabled": "auto"' in err and "Traceback" not in err
    assert run_cli("plan", *base, "--output_dir", tmp_path / "b") == 2
    err = capsys.readouterr().err
    assert "fp16.enabled = true but --torch_dtype float32 on this machine, which has no CUDA GPU" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
