"""The plan as the user sees it: the terminal report (the plan table, the device block, the advice and memory
estimate) and the plan files (plan.json, lr_plan.csv, lr_plan.png) that `tunewise plan` and every run write."""
from __future__ import annotations

import json
import os
from dataclasses import asdict
from typing import TYPE_CHECKING

from tunewise.files import replace_atomically
from tunewise.plan.schedule import LRSchedule, StepPlan

if TYPE_CHECKING:
    from tunewise.plan.run import Run


def print_plan(run: Run) -> None:
    """The notes, the plan table, the device's choices and the advice (with the memory estimate)."""
    from tunewise.plan.advice import plan_advice

    for note in run.notes:
        print(note)
    print(format_plan(run.step_plan, run.schedule, run.sources, run.engine), flush=True)
    print("\n".join(run.device.lines()), flush=True)
    print(plan_advice(run), flush=True)


def _plot(handle, schedule: LRSchedule) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: only runs that write plan files need it
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    steps, lrs = zip(*schedule.curve()[1:])
    ax.plot(steps, lrs, lw=1.5)
    if schedule.warmup_steps:
        end = schedule.key_points()["end_warmup"][0]
        ax.axvline(end, color="tab:red", ls="--", lw=1, label=f"warmup ends (first peak update: step {end})")
        ax.legend(loc="best")
    ax.set(xlabel="optimizer step (as logged)", ylabel="learning rate", xlim=(0, schedule.total_steps),
           title=f"{schedule.scheduler}: peak {schedule.learning_rate:g}, warmup {schedule.warmup_steps}, "
                 f"{schedule.total_steps} steps")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(handle, format="png", dpi=100)


def write_plan_files(directory, step_plan: StepPlan, schedule: LRSchedule, extra: dict | None = None) -> dict:
    """Write plan.json, lr_plan.csv and lr_plan.png into ``directory`` (each atomically); return the plan.json dict."""
    if step_plan.total_steps != schedule.total_steps:
        raise ValueError(f"step plan has {step_plan.total_steps} steps, schedule {schedule.total_steps}")
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    plan = {
        "steps": {**asdict(step_plan), "epochs_covered": step_plan.epochs_covered},
        "schedule": {**asdict(schedule), "kwargs": dict(schedule.kwargs)},
        "key_points": {name: {"step": s, "lr": lr} for name, (s, lr) in schedule.key_points().items()},
        "trainer_kwargs": {**step_plan.trainer_kwargs(), **schedule.trainer_kwargs()},
        "lr_mapping": "lr_at(step) = learning_rate the Trainer logs at global_step == step (LR used by that update)",
        "extra": dict(extra or {}),
    }
    text = json.dumps(plan, indent=2, sort_keys=False, default=str) + "\n"
    replace_atomically(os.path.join(directory, "plan.json"), lambda h: h.write(text.encode()))
    csv_text = "step,lr\n" + "".join(f"{s},{lr!r}\n" for s, lr in schedule.curve())
    replace_atomically(os.path.join(directory, "lr_plan.csv"), lambda h: h.write(csv_text.encode()))
    replace_atomically(os.path.join(directory, "lr_plan.png"), lambda h: _plot(h, schedule))
    return plan


def format_plan(step_plan: StepPlan, schedule: LRSchedule, sources: dict[str, str] | None = None,
                engine: str | None = None) -> str:
    """A terminal table of the plan; ``sources`` maps field names to where each value came from; ``engine`` says
    what runs the processes (one process, DDP, DeepSpeed ZeRO-N, FSDP ...)."""
    sources = sources or {}
    p = step_plan
    epochs = f"{p.num_train_epochs:g}" if p.max_steps < 0 else f"{p.epochs_covered:.3g} (max_steps={p.max_steps})"
    rows = [
        ("training samples", "num_samples", f"{p.num_samples:,}"),
        ("batch per device", "per_device_train_batch_size", str(p.per_device_train_batch_size)),
        ("gradient accumulation", "gradient_accumulation_steps", str(p.gradient_accumulation_steps)),
        ("world size", "world_size", str(p.world_size)),
        *([("engine", "", engine)] if engine else []),
        ("global batch", "global_batch_size", str(p.global_batch_size)),
        ("drop last batch", "dataloader_drop_last", "yes" if p.dataloader_drop_last else "no"),
        ("epochs", "num_train_epochs", epochs),
        ("batches/epoch/device", "batches_per_epoch_per_device", f"{p.batches_per_epoch_per_device:,}"),
        ("steps/epoch", "steps_per_epoch", f"{p.steps_per_epoch:,}"),
        ("total steps", "total_steps", f"{p.total_steps:,}"),
        ("warmup steps", "warmup", f"{schedule.warmup_steps:,}"),
        ("scheduler", "scheduler", schedule.scheduler),
        ("peak learning rate", "learning_rate", f"{schedule.learning_rate:g}"),
    ]
    rows += [(f"  {key}", key, str(value)) for key, value in schedule.kwargs.items()]
    rows += [(f"LR {name} (step {s})", "", f"{lr:.6g}") for name, (s, lr) in schedule.key_points().items()]
    width = max(len(label) for label, _, _ in rows)
    vwidth = max(len(value) for _, _, value in rows)
    lines = ["Training plan" + (f"\n  {'':<{width}}  {'value':<{vwidth}}  source" if sources else "")]
    for label, key, value in rows:
        source = sources.get(key, "") if key else ""
        lines.append(f"  {label:<{width}}  {value:<{vwidth}}  {source}".rstrip())
    return "\n".join(lines)
