"""Tests for tunewise.plan.schedule: hand-worked LR values, bit-exact agreement with transformers' schedulers and
Trainer, step arithmetic, warmup resolution, plan files.

Step/LR mapping under test: ``lr_at(N)`` is the ``learning_rate`` the Trainer logs at ``global_step == N``, i.e. the
LR used by optimizer update N = ``lr * f(N-1)`` where ``f(k)`` is the scheduler multiplier after k scheduler steps
(the Trainer reads ``get_last_lr()`` *before* ``scheduler.step()``). ``optimizer_lr_at(N)`` = ``lr * f(N)`` is what
``optimizer.param_groups[0]["lr"]`` holds in ``on_step_end``/``on_log`` at ``global_step == N``.
"""

import json
import math

import pytest

from tunewise.errors import UserError
from tunewise.plan.report import format_plan, write_plan_files
from tunewise.plan.schedule import (
    SCHEDULERS,
    LRSchedule,
    lr_relative_error,
    make_schedule,
    plan_steps,
    resolve_warmup,
)

LR = 1e-3
T, W = 36, 4  # hand-worked runs: 32 post-warmup steps, so the post-warmup midpoint has progress exactly 0.5
REL = 1e-12


def approx(x):
    return pytest.approx(x, rel=REL, abs=0.0)


def points(schedule):
    return {name: lr for name, (_, lr) in schedule.key_points().items()}


# ---------------------------------------------------------------- hand-worked values, one test per scheduler


def test_key_point_steps():
    s = make_schedule("linear", LR, T, W)
    steps = {name: step for name, (step, _) in s.key_points().items()}
    # update N uses f(N-1): first update 1 -> f(0); warmup half f(2) -> step 3; first peak f(4) -> step 5;
    # post-warmup midpoint f(4 + 32/2) = f(20) -> step 21; last update 36 -> f(35).
    assert steps == {"start": 1, "mid_warmup": 3, "end_warmup": 5, "midpoint": 21, "last": 36}


def test_linear():
    s = make_schedule("linear", LR, T, W)
    assert s.lr_at(0) == 0.0  # before training the optimizer holds f(0) = 0/4
    p = points(s)
    assert p["start"] == 0.0  # f(0) = 0/4
    assert p["mid_warmup"] == approx(LR * 2 / 4)  # f(2) = 2/4
    assert p["end_warmup"] == approx(LR * (36 - 4) / (36 - 4))  # f(4) = (T-4)/(T-W) = 1
    assert p["midpoint"] == approx(LR * (36 - 20) / 32)  # f(20) = 16/32
    assert p["last"] == approx(LR * (36 - 35) / 32)  # f(35) = 1/32: the last update still has a non-zero LR
    assert s.optimizer_lr_at(T) == 0.0  # f(36) = 0, set after the last update, never used


def test_cosine():
    s = make_schedule("cosine", LR, T, W)
    p = points(s)
    assert p["start"] == 0.0
    assert p["mid_warmup"] == approx(LR * 0.5)
    assert p["end_warmup"] == approx(LR * 0.5 * (1 + math.cos(0.0)))  # progress 0 -> LR
    assert p["midpoint"] == approx(LR * 0.5 * (1 + math.cos(math.pi * 0.5)))  # progress 16/32
    assert p["last"] == approx(LR * 0.5 * (1 + math.cos(math.pi * 31 / 32)))  # progress (35-4)/32
    assert s.optimizer_lr_at(T) == 0.0  # progress 1: 0.5 * (1 + cos(pi)) = 0


def test_cosine_num_cycles():
    s = make_schedule("cosine", LR, T, W, num_cycles=1.0)  # one full wave: back to the peak at the end
    assert points(s)["midpoint"] == approx(LR * 0.5 * (1 + math.cos(2 * math.pi * 0.5)))  # = 0
    assert s.lr_at(13) == approx(LR * 0.5 * (1 + math.cos(2 * math.pi * 8 / 32)))  # f(12): progress 8/32


@pytest.mark.parametrize("kwargs", [{"min_lr": 1e-4}, {"min_lr_rate": 0.1}])
def test_cosine_with_min_lr(kwargs):
    s = make_schedule("cosine_with_min_lr", LR, T, W, **kwargs)
    p = points(s)
    rate = 0.1  # min_lr / LR
    assert p["start"] == 0.0  # warmup still starts at 0, not at min_lr
    assert p["mid_warmup"] == approx(LR * 0.5)
    assert p["end_warmup"] == approx(LR * (1.0 * (1 - rate) + rate))
    assert p["midpoint"] == approx(LR * (0.5 * (1 + math.cos(math.pi * 0.5)) * (1 - rate) + rate))  # ~0.55 LR
    assert p["last"] == approx(LR * (0.5 * (1 + math.cos(math.pi * 31 / 32)) * (1 - rate) + rate))
    assert s.optimizer_lr_at(T) == approx(LR * rate)  # progress 1: exactly the floor


def test_constant():
    s = make_schedule("constant", LR, T, 0)
    assert s.lr_at(0) == LR
    assert set(points(s).values()) == {LR}
    assert all(lr == LR for _, lr in s.curve())


def test_constant_with_warmup():
    s = make_schedule("constant_with_warmup", LR, T, W)
    p = points(s)
    assert p["start"] == 0.0
    assert p["mid_warmup"] == approx(LR * 2 / 4)
    assert p["end_warmup"] == LR
    assert p["midpoint"] == LR
    assert p["last"] == LR
    assert s.lr_at(4) == approx(LR * 3 / 4)  # the last warmup update: f(3)


def test_warmup_stable_decay():
    # stable = 36 - 4 - 8 = 24: warmup f(0..3), stable f(4..27), decay f(28..35), floor f(36)
    s = make_schedule("warmup_stable_decay", LR, T, W, num_decay_steps=8, min_lr_ratio=0.1)
    p = points(s)
    assert p["start"] == approx(LR * (0 / 4 * 0.9 + 0.1))  # WSD warmup starts at min_lr_ratio, not 0
    assert p["mid_warmup"] == approx(LR * (2 / 4 * 0.9 + 0.1))
    assert p["end_warmup"] == LR
    assert p["midpoint"] == LR  # f(20): stable
    assert s.key_points()["decay_start"] == (29, approx(LR * (0.5 * (1 + math.cos(0.0)) * 0.9 + 0.1)))  # f(28)
    assert s.lr_at(33) == approx(LR * (0.5 * (1 + math.cos(math.pi * 4 / 8)) * 0.9 + 0.1))  # f(32): progress 4/8
    assert p["last"] == approx(LR * (0.5 * (1 + math.cos(math.pi * 7 / 8)) * 0.9 + 0.1))  # f(35): progress 7/8
    assert s.optimizer_lr_at(T) == approx(LR * 0.1)


def test_warmup_stable_decay_shapes():
    s = make_schedule("warmup_stable_decay", LR, T, W, num_decay_steps=8, warmup_type="cosine",
                      decay_type="linear")
    assert s.lr_at(3) == approx(LR * 0.5 * (1.0 - math.cos(math.pi * 2 / 4)))  # f(2): cosine warmup from 0
    assert s.lr_at(33) == approx(LR * (1.0 - 4 / 8))  # f(32): linear decay
    s = make_schedule("warmup_stable_decay", LR, T, W, num_decay_steps=8, warmup_type="1-sqrt",
                      decay_type="1-sqrt")
    assert s.lr_at(3) == approx(LR * (1.0 - math.sqrt(1.0 - 2 / 4)))
    assert s.lr_at(33) == approx(LR * (1.0 - math.sqrt(4 / 8)))


def test_wsd_num_stable_steps():
    # stable given and equal to the derived value: dropped so transformers does not warn about both being set
    assert "num_stable_steps" not in make_schedule("warmup_stable_decay", LR, T, W, num_decay_steps=8,
                                                   num_stable_steps=24).kwargs
    # shorter stable phase: the tail after the decay sits at min_lr_ratio (transformers' behaviour)
    s = make_schedule("warmup_stable_decay", LR, T, W, num_decay_steps=8, num_stable_steps=10, min_lr_ratio=0.2)
    assert s.kwargs["num_stable_steps"] == 10
    assert s.lr_at(15) == LR  # f(14): last stable
    assert s.lr_at(30) == approx(LR * 0.2)  # f(29) >= 4 + 10 + 8


# ---------------------------------------------------------------- bit-exact agreement with transformers


CROSS_CHECK = [
    ("linear", 4, {}),
    ("linear", 0, {}),
    ("cosine", 4, {}),
    ("cosine", 5, {"num_cycles": 1.5}),
    ("cosine_with_min_lr", 4, {"min_lr": 3e-5}),
    ("cosine_with_min_lr", 4, {"min_lr_rate": 0.07, "num_cycles": 0.5}),
    ("constant", 0, {}),
    ("constant_with_warmup", 4, {}),
    ("warmup_stable_decay", 4, {"num_decay_steps": 10}),
    ("warmup_stable_decay", 4, {"num_decay_steps": 9, "min_lr_ratio": 0.1, "decay_type": "linear"}),
    ("warmup_stable_decay", 3, {"num_decay_steps": 7, "num_stable_steps": 11, "min_lr_ratio": 0.05,
                                "warmup_type": "1-sqrt", "decay_type": "1-sqrt"}),
    ("warmup_stable_decay", 6, {"num_decay_steps": 31, "warmup_type": "cosine", "min_lr_ratio": 0.3}),
]


@pytest.mark.filterwarnings("ignore:Both num_training_steps and num_stable_steps")
@pytest.mark.parametrize("name,warmup,kwargs", CROSS_CHECK)
def test_matches_transformers_scheduler(name, warmup, kwargs):
    """Drive a real optimizer + transformers.get_scheduler the way Trainer does: optimizer.step(), read
    get_last_lr() (the value it logs), scheduler.step(), global_step += 1."""
    torch = pytest.importorskip("torch")
    from transformers import get_scheduler

    total, lr = 37, 3e-4
    plan = make_schedule(name, lr, total, warmup, **kwargs)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=lr)
    scheduler = get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total,
                              scheduler_specific_kwargs=plan.trainer_kwargs()["lr_scheduler_kwargs"])
    assert optimizer.param_groups[0]["lr"] == plan.lr_at(0) == plan.optimizer_lr_at(0)
    for step in range(1, total + 1):
        optimizer.step()
        logged = scheduler.get_last_lr()[0]
        scheduler.step()
        assert lr_relative_error(logged, plan.lr_at(step), floor=lr) <= REL
        assert logged == plan.lr_at(step)  # in fact bit-identical
        assert optimizer.param_groups[0]["lr"] == plan.optimizer_lr_at(step)


def test_trainer_kwargs():
    s = make_schedule("warmup_stable_decay", LR, T, resolve_warmup(T, warmup_ratio=0.1), num_decay_steps=8)
    assert s.trainer_kwargs() == {"lr_scheduler_type": "warmup_stable_decay", "warmup_steps": 4, "learning_rate": LR,
                                  "lr_scheduler_kwargs": {"num_decay_steps": 8}, "max_steps": T}
    assert isinstance(s.trainer_kwargs()["warmup_steps"], int)


# ---------------------------------------------------------------- step arithmetic


@pytest.mark.parametrize(
    "n,b,ga,world,epochs,max_steps,drop,batches,per_epoch,total",
    [
        # ceil(100/3)=34 batches, ceil(34/2)=17 per device, 17//4 + 1 = 5 updates/epoch (4x4 + 1 leftover), x3
        (100, 3, 4, 2, 3.0, -1, False, 17, 5, 15),
        # drop_last: 100//3 = 33 batches, 33//2 = 16 per device, 16/4 = 4 updates/epoch, x3
        (100, 3, 4, 2, 3.0, -1, True, 16, 4, 12),
        (48, 1, 16, 1, 10.0, -1, False, 48, 3, 30),  # 48/16 = 3 updates/epoch, x10
        (49, 1, 16, 1, 10.0, -1, False, 49, 4, 40),  # 3 full updates + 1 update of a single batch
        (49, 1, 16, 1, 10.0, -1, True, 49, 4, 40),  # drop_last drops partial *batches*, not accumulation
        (10, 4, 1, 1, 1.0, -1, False, 3, 3, 3),  # last batch of 2 kept
        (10, 4, 1, 1, 1.0, -1, True, 2, 2, 2),  # last batch of 2 dropped
        (7, 2, 8, 1, 3.0, -1, False, 4, 1, 3),  # fewer batches than accumulation: still 1 update/epoch
        (100, 3, 4, 2, 2.5, -1, False, 17, 5, 13),  # fractional epochs: ceil(2.5 * 5)
        (100, 3, 4, 2, 0.1, -1, False, 17, 5, 1),  # ceil(0.5)
        (100, 3, 4, 2, 3.0, 7, False, 17, 5, 7),  # max_steps overrides epochs
        (100, 3, 4, 2, 3.0, 500, False, 17, 5, 500),  # ... also beyond one pass
        (5, 1, 1, 8, 1.0, -1, False, 1, 1, 1),  # more devices than batches: even_batches pads to 1 each
    ],
)
def test_plan_steps(n, b, ga, world, epochs, max_steps, drop, batches, per_epoch, total):
    p = plan_steps(n, b, ga, world, epochs, max_steps, drop)
    assert (p.batches_per_epoch_per_device, p.steps_per_epoch, p.total_steps) == (batches, per_epoch, total)
    assert p.global_batch_size == b * ga * world
    assert p.trainer_kwargs()["max_steps"] == total


@pytest.mark.parametrize("n,b,world,drop", [(100, 3, 2, False), (100, 3, 2, True), (101, 4, 3, False),
                                            (101, 4, 3, True), (5, 1, 8, False), (64, 8, 4, True)])
def test_batches_per_device_match_accelerate(n, b, world, drop):
    """Per-device batch count against accelerate's BatchSamplerShard, which the Trainer's dataloader uses."""
    torch = pytest.importorskip("torch")
    from accelerate.data_loader import BatchSamplerShard

    sampler = torch.utils.data.BatchSampler(range(n), batch_size=b, drop_last=drop)
    lengths = {len(BatchSamplerShard(sampler, num_processes=world, process_index=i)) for i in range(world)}
    assert lengths == {plan_steps(n, b, 1, world, dataloader_drop_last=drop).batches_per_epoch_per_device}


def test_plan_steps_errors():
    with pytest.raises(UserError, match="no full batch"):
        plan_steps(3, 4, dataloader_drop_last=True)
    with pytest.raises(UserError, match="max_steps"):
        plan_steps(10, max_steps=0)
    with pytest.raises(UserError, match="num_train_epochs"):
        plan_steps(10, num_train_epochs=0.0)
    with pytest.raises(UserError, match="samples"):
        plan_steps(0)
    with pytest.raises(UserError, match="per_device_train_batch_size"):
        plan_steps(10, per_device_train_batch_size=0)


class _Tiny:
    """Built lazily so torch is only imported by the tests that need it."""

    @staticmethod
    def model():
        import torch

        class Tiny(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = torch.nn.Linear(2, 1)

            def forward(self, x, labels):
                return {"loss": torch.nn.functional.mse_loss(self.lin(x).squeeze(-1), labels)}

        return Tiny()

    @staticmethod
    def data(n):
        import torch

        return [{"x": torch.tensor([i / n, 1.0]), "labels": torch.tensor(float(i % 3))} for i in range(n)]


@pytest.mark.parametrize(
    "n,b,ga,epochs,max_steps,drop,scheduler,warmup,kwargs",
    [
        (13, 2, 3, 2.5, -1, False, "cosine_with_min_lr", 2, {"min_lr_rate": 0.1}),  # 7 batches: 3 updates/epoch
        (13, 2, 3, 3.0, 5, True, "warmup_stable_decay", 1, {"num_decay_steps": 2, "min_lr_ratio": 0.2}),
        (9, 1, 4, 2.0, -1, False, "linear", 0.25, {}),  # warmup as a ratio: ceil(6 * 0.25) = 2
    ],
)
def test_matches_real_trainer(tmp_path, n, b, ga, epochs, max_steps, drop, scheduler, warmup, kwargs):
    pytest.importorskip("torch")
    from transformers import Trainer, TrainerCallback, TrainingArguments

    steps = plan_steps(n, b, ga, 1, epochs, max_steps, drop)
    warmup_steps = resolve_warmup(steps.total_steps, warmup_ratio=warmup) if warmup < 1 else warmup
    plan = make_schedule(scheduler, 2e-3, steps.total_steps, warmup_steps, **kwargs)
    seen = {"step_end": [], "log": []}

    class Record(TrainerCallback):
        def on_step_end(self, args, state, control, optimizer=None, **_):
            seen["step_end"].append((state.global_step, optimizer.param_groups[0]["lr"]))

        def on_log(self, args, state, control, logs=None, optimizer=None, **_):
            if "learning_rate" in logs:
                seen["log"].append((state.global_step, optimizer.param_groups[0]["lr"]))

    tk = plan.trainer_kwargs()
    if max_steps < 0:
        del tk["max_steps"]  # let the Trainer derive the total from epochs, to check our arithmetic
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], save_strategy="no", use_cpu=True,
                             logging_steps=1, per_device_train_batch_size=b, gradient_accumulation_steps=ga,
                             num_train_epochs=epochs, dataloader_drop_last=drop, disable_tqdm=True, seed=0, **tk)
    trainer = Trainer(model=_Tiny.model(), args=args, train_dataset=_Tiny.data(n), callbacks=[Record()])
    assert len(trainer.get_train_dataloader()) == steps.batches_per_epoch_per_device
    trainer.train()

    assert trainer.state.global_step == trainer.state.max_steps == steps.total_steps
    logged = [(e["step"], e["learning_rate"]) for e in trainer.state.log_history if "learning_rate" in e]
    assert [s for s, _ in logged] == list(range(1, steps.total_steps + 1))
    assert logged == [(s, plan.lr_at(s)) for s in range(1, steps.total_steps + 1)]
    expected = [(s, plan.optimizer_lr_at(s)) for s in range(1, steps.total_steps + 1)]
    assert seen["step_end"] == expected
    assert seen["log"] == expected


# ---------------------------------------------------------------- warmup resolution


def test_resolve_warmup():
    assert resolve_warmup(100) == 0
    assert resolve_warmup(100, warmup_steps=7) == 7
    assert resolve_warmup(100, warmup_ratio=0.0) == 0
    assert resolve_warmup(30, warmup_ratio=0.1) == 3  # 30 * 0.1 == 3.0
    assert resolve_warmup(101, warmup_ratio=0.1) == 11  # ceil(10.1)
    assert resolve_warmup(100, warmup_ratio=0.07) == 8  # 100 * 0.07 == 7.000000000000001 -> ceil 8, as transformers


def test_resolve_warmup_matches_training_arguments(tmp_path):
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    for total in (1, 7, 30, 100, 101, 999, 12345):
        for ratio in (0.0, 0.01, 0.03, 0.05, 0.07, 0.1, 0.15, 0.3, 0.5, 0.999):
            args.warmup_steps = ratio
            assert resolve_warmup(total, warmup_ratio=ratio) == args.get_warmup_steps(total), (total, ratio)


def test_resolve_warmup_errors():
    with pytest.raises(UserError) as err:
        resolve_warmup(100, warmup_ratio=0.1, warmup_steps=5)
    assert str(err.value) == "--warmup_ratio and --warmup_steps are both set; give one."
    with pytest.raises(UserError):
        resolve_warmup(100, warmup_ratio=0.0, warmup_steps=0)  # zeros still count as set
    for ratio in (1.0, 1.5, -0.1, float("nan")):  # transformers reads warmup_steps=1.0 as one step, not 100%
        with pytest.raises(UserError, match="warmup_ratio"):
            resolve_warmup(100, warmup_ratio=ratio)
    for steps in (-1, 2.5, True):
        with pytest.raises(UserError, match="warmup_steps"):
            resolve_warmup(100, warmup_steps=steps)


# ---------------------------------------------------------------- schedule validation


def test_unknown_scheduler():
    with pytest.raises(UserError) as err:
        make_schedule("cosine_with_restarts", LR, T, W)
    assert all(name in str(err.value) for name in SCHEDULERS)


@pytest.mark.parametrize(
    "name,warmup,kwargs,match",
    [
        ("warmup_stable_decay", 4, {}, "num_decay_steps"),
        ("warmup_stable_decay", 4, {"num_decay_steps": 33}, "do not fit"),
        ("warmup_stable_decay", 4, {"num_decay_steps": 8, "num_stable_steps": 25}, "do not fit"),
        ("warmup_stable_decay", 4, {"num_decay_steps": 8, "decay_type": "exp"}, "decay_type"),
        ("warmup_stable_decay", 4, {"num_decay_steps": 8, "min_lr_ratio": 1.5}, "min_lr_ratio"),
        ("cosine_with_min_lr", 4, {}, "exactly one"),
        ("cosine_with_min_lr", 4, {"min_lr": 1e-5, "min_lr_rate": 0.1}, "exactly one"),
        ("cosine_with_min_lr", 4, {"min_lr": 2e-3}, "min_lr"),
        ("linear", 4, {"num_cycles": 1}, "does not take num_cycles"),
        ("cosine", 4, {"min_lr": 1e-5}, "does not take min_lr"),
        ("constant", 4, {}, "constant_with_warmup"),
        ("linear", 36, {}, "whole run"),
        ("linear", -1, {}, "warmup_steps"),
    ],
)
def test_schedule_errors(name, warmup, kwargs, match):
    with pytest.raises(UserError, match=match):
        make_schedule(name, LR, T, warmup, **kwargs)


def test_bad_learning_rate_and_steps():
    for lr in (0.0, -1e-3, float("inf")):
        with pytest.raises(UserError, match="learning_rate"):
            make_schedule("linear", lr, T, W)
    with pytest.raises(UserError, match="total_steps"):
        make_schedule("linear", LR, 0, 0)
    with pytest.raises(ValueError):
        make_schedule("linear", LR, T, W).lr_at(T + 1)


def test_schedule_is_frozen_and_copies_kwargs():
    kwargs = {"num_cycles": 0.5}
    s = LRSchedule("cosine", LR, W, T, kwargs)
    kwargs["num_cycles"] = 2.0
    assert s.kwargs == {"num_cycles": 0.5}
    with pytest.raises(AttributeError):
        s.total_steps = 5


def test_lr_relative_error():
    assert lr_relative_error(1.1e-3, 1e-3) == pytest.approx(0.1)
    assert lr_relative_error(0.0, 0.0) == 0.0
    assert lr_relative_error(1e-9, 0.0) == math.inf
    assert lr_relative_error(1e-9, 0.0, floor=1e-3) == pytest.approx(1e-6)
    assert lr_relative_error(2e-4, 1e-4, floor=1e-3) == pytest.approx(0.1)


# ---------------------------------------------------------------- plan files and terminal table


def test_write_plan_files(tmp_path):
    steps = plan_steps(48, 1, 16, 1, 10)
    s = make_schedule("cosine_with_min_lr", LR, steps.total_steps, 3, min_lr=1e-4)
    out = tmp_path / "run"
    plan = write_plan_files(out, steps, s, extra={"model": "tiny"})
    assert sorted(p.name for p in out.iterdir()) == ["lr_plan.csv", "lr_plan.png", "plan.json"]  # no temp files
    assert json.loads((out / "plan.json").read_text()) == plan
    assert plan["steps"]["total_steps"] == 30 and plan["steps"]["steps_per_epoch"] == 3
    assert plan["schedule"] == {"scheduler": "cosine_with_min_lr", "learning_rate": LR, "warmup_steps": 3,
                                "total_steps": 30, "kwargs": {"min_lr": 1e-4}}
    assert plan["key_points"]["last"] == {"step": 30, "lr": s.lr_at(30)}
    assert plan["trainer_kwargs"]["max_steps"] == 30 and plan["extra"] == {"model": "tiny"}
    rows = (out / "lr_plan.csv").read_text().splitlines()
    assert rows[0] == "step,lr" and len(rows) == 32
    assert [(int(a), float(b)) for a, b in (r.split(",") for r in rows[1:])] == s.curve()  # repr round-trips
    assert (out / "lr_plan.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError):
        write_plan_files(out, plan_steps(10), s)


def test_format_plan():
    steps = plan_steps(100, 3, 4, 2, 3.0)
    s = make_schedule("warmup_stable_decay", LR, steps.total_steps, 2, num_decay_steps=5)
    text = format_plan(steps, s, sources={"learning_rate": "yaml", "world_size": "deepspeed", "num_samples": "flag"})
    assert "source" in text.splitlines()[1]
    line = {ln.split("  ")[1].strip(): ln for ln in text.splitlines()[2:]}
    assert line["peak learning rate"].split()[-1] == "yaml"
    assert line["world size"].split()[-2:] == ["2", "deepspeed"]
    assert line["total steps"].split()[-1] == "15"
    assert "warmup_stable_decay" in text and "num_decay_steps" in text and "LR last (step 15)" in text
    assert "source" not in format_plan(steps, s)
