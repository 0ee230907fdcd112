"""The grid of a sweep: `tunewise sft` flags, where a scalar flag given as a comma list is an axis.

`--learning_rate 1e-3,1e-4 --num_train_epochs 3,5` gives four trials, the first axis outermost. List-valued flags
(`--dataset a.jsonl,b.jsonl`, `--target_modules q_proj,v_proj`, `--model_name`) keep their own meaning of commas and
are never split, nor are the free-text flags `--system` and `--lr_scheduler_kwargs`. Each trial is the same flags
with one value per axis, written to SWEEP_DIR/trials/NAME (`--output_dir NAME --add_version false`); every
trial's flags are parsed before the first one runs, so a bad value stops the sweep with exit code 2.
"""
from __future__ import annotations

import dataclasses
import itertools
import re
import typing
from dataclasses import dataclass
from pathlib import Path

from tunewise.args import SftArgs
from tunewise.flags import below_minimum, convert_value, field_kind, flag_field, flag_groups, flag_table, parse
from tunewise.errors import UserError, raise_problems

DEFAULT_SWEEP_DIR = "output/sweep"
NEVER_AXES = ("system", "lr_scheduler_kwargs")  # free text: a comma is part of the value
REFUSED = {
    "add_version": "each trial is written to OUTPUT_DIR/trials/NAME; drop --add_version.",
    "resume_from_checkpoint": "a sweep resumes by itself: run the same command again (finished trials are skipped).",
}
# short names in trial directory names and table headers; other flags use their own name
SHORT = {"learning_rate": ("lr", "lr"), "num_train_epochs": ("ep", "epochs"), "max_steps": ("steps", "max steps"),
         "per_device_train_batch_size": ("bs", "batch"), "gradient_accumulation_steps": ("ga", "accum"),
         "lora_rank": ("r", "rank"), "lora_alpha": ("alpha", "alpha"), "warmup_ratio": ("wr", "warmup"),
         "weight_decay": ("wd", "wd"), "lr_scheduler_type": ("", "scheduler"), "train_type": ("", "type"),
         "model": ("", "model")}


@dataclass
class SweepArgs:
    """Flags of `tunewise sweep` itself (all other flags are `tunewise sft`'s)."""

    eval_general_limit: int = flag_field(0, "general-skill prompts asked of each trial: the first N of the held-out set "
                                    "(0 = all; the embedded model has 200)")
    eval_max_new_tokens: int = flag_field(128, "longest reply in the evaluation (a reply reaching it counts as running on)")

    def __post_init__(self):
        raise_problems(below_minimum(self, ("eval_general_limit",), 0) + below_minimum(self, ("eval_max_new_tokens",)))


@dataclass
class Axis:
    name: str  # the SftArgs field
    flag: str  # as written on the command line (an alias stays an alias)
    values: list[str]  # as written, e.g. "1e-3"

    @property
    def header(self) -> str:
        return SHORT.get(self.name, ("", self.name))[1]


@dataclass
class Trial:
    name: str
    values: dict[str, str]  # axis name -> value as written
    argv: list[str]  # the sft flags, without --output_dir/--add_version (those are added by `full_argv`)
    dir: Path

    def full_argv(self) -> list[str]:
        return [*self.argv, "--output_dir", str(self.dir), "--add_version", "false"]

    def flags_text(self) -> str:
        return " ".join(f"--{k} {v}" for k, v in self.values.items())


@dataclass
class Grid:
    sweep_dir: Path
    options: SweepArgs
    axes: list[Axis]
    trials: list[Trial]
    system: str | None  # the fixed --system (the base model is evaluated with it too)


def _slug(text: str) -> str:
    return re.sub(r"[^\w.+-]+", "-", text).strip("-") or "x"


def trial_name(values: dict[str, str]) -> str:
    return "_".join(SHORT.get(name, (name + "-",))[0] + _slug(value) for name, value in values.items())


def _assemble(fixed: list[tuple[str | None, list[str] | None]], by_flag: dict[str, str]) -> list[str]:
    """The flags in their order, each axis (values None) with its value from `by_flag`."""
    argv = []
    for name, values in fixed:
        argv += values if name is None else [f"--{name}", by_flag[name]] if values is None else [f"--{name}", *values]
    return argv


def _check(hints: dict, axes: list[Axis], trials: list[Trial], fixed: list) -> str | None:
    """Parse every trial's flags; returns the (fixed) --system. A value that is not of its flag's type is reported
    once, as are problems of the fixed flags; a problem of one combination names the trial."""
    problems, good = [], {}
    for axis in axes:
        scalar, _, optional = field_kind(hints[axis.name])
        for value in axis.values:
            try:
                convert_value(axis.name, value, scalar, optional)
                good.setdefault(axis.flag, value)
            except ValueError as e:
                problems.append(f"--{axis.flag} {value}: {e}.")
    if problems:  # and the fixed flags' problems, with a good value for each axis that has one
        try:
            parse(SftArgs, _assemble(fixed, {a.flag: good.get(a.flag, a.values[0]) for a in axes}))
        except UserError as e:
            problems.insert(0, str(e))
        raise_problems(problems)
    system, messages = None, {}
    for trial in trials:
        try:
            system = parse(SftArgs, trial.full_argv())[0].system
        except UserError as e:
            messages.setdefault(str(e), []).append(trial)
    if len(messages) == 1 and len(next(iter(messages.values()))) == len(trials):
        raise UserError(next(iter(messages)))  # the fixed flags' problem: once
    if messages:
        raise UserError(" ".join(f"{m} (trial {ts[0].flags_text()}" + (f" and {len(ts) - 1} more)" if len(ts) > 1
                                                                          else ")") for m, ts in messages.items()))
    return system


def parse_grid(argv: list[str]) -> Grid:
    """The sweep's own flags, its axes and trials; every trial's flags parsed (all problems reported at once)."""
    sft_fields = flag_table(SftArgs)
    sweep_names = {f.name for f in dataclasses.fields(SweepArgs)}
    hints = typing.get_type_hints(SftArgs)
    sweep_argv, fixed, axes = [], [], []
    sweep_dir = DEFAULT_SWEEP_DIR
    problems, seen = [], []
    for name, values in flag_groups(argv):
        field = sft_fields.get(name) if name else None
        if field is not None:
            seen.append(field.name)
        if name in sweep_names:
            sweep_argv += [f"--{name}", *values]
        elif field is not None and field.name == "output_dir":
            if len(values) != 1:
                problems.append("--output_dir takes one directory (the sweep's).")
            else:
                sweep_dir = values[0]
        elif field is not None and field.name in REFUSED:
            problems.append(f"--{name}: {REFUSED[field.name]}")
        elif (field is not None and field.name not in NEVER_AXES and not field_kind(hints[field.name])[1]
              and len(values) == 1 and "," in values[0]):
            parts = [v.strip() for v in values[0].split(",")]
            if any(not p for p in parts) or len(set(parts)) != len(parts):
                problems.append(f"--{name} {values[0]}: an empty or repeated value in the list.")
            else:
                axes.append(Axis(field.name, name, parts))
            fixed.append((name, None))  # the axis' place among the flags
        else:
            fixed.append((name, values))
    problems += list(dict.fromkeys(f"--{a.flag} is given twice." for a in axes if seen.count(a.name) > 1))
    raise_problems(problems)
    options, _, _ = parse(SweepArgs, sweep_argv)
    root = Path(sweep_dir)

    trials, names = [], set()
    for combo in itertools.product(*(a.values for a in axes)):
        values = {a.name: v for a, v in zip(axes, combo)}
        trial_argv = _assemble(fixed, {a.flag: v for a, v in zip(axes, combo)})
        name = trial_name(values) if axes else "single"
        while name in names:
            name += "+"
        names.add(name)
        trials.append(Trial(name, values, trial_argv, root / "trials" / name))

    system = _check(hints, axes, trials, fixed)
    return Grid(root, options, axes, trials, system)
