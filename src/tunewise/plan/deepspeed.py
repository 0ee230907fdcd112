"""Reconcile a DeepSpeed JSON with the flags before launch, so the plan stays the one source of truth for the LR.

The bug this prevents: a DeepSpeed JSON with ``"scheduler": {"type": "WarmupLR", ...}`` makes the HF Trainer hand the
scheduler to DeepSpeed, silently replacing ``--lr_scheduler_type cosine`` by a warm-up and then a flat LR.

Policy (``reconcile``):

* ``"auto"`` values are filled exactly like transformers' ``HfTrainerDeepSpeedConfig`` fills them (same keys, same
  values), so the Trainer finds nothing left to change. Keys that need the model (``reduce_bucket_size``, ``stage3_*``)
  stay ``"auto"`` for the Trainer.
* A hard-coded value that contradicts a flag (batch size, accumulation, clipping, dtype, optimizer lr/betas/eps/weight
  decay; and with ``keep`` the scheduler's warmup_max_lr/warmup_num_steps/total_num_steps) is a UserError naming the
  file, the key and both values: the keys transformers would reject after the model has loaded, reported up front.
* An ``"optimizer"`` block is removed (the Trainer's AdamW from the flags is used) with a warning showing it. With
  optimizer offload, ``zero_force_ds_cpu_optimizer`` is set to false (deepspeed refuses a non-DeepSpeed optimizer
  with offload otherwise); an explicit ``true`` is an error.
* A ``"scheduler"`` block is removed with a warning (``keep_scheduler=False``, ``--deepspeed_scheduler flags``), or kept
  (``--deepspeed_scheduler keep``) with a warning that it replaces ``--lr_scheduler_type``; the plan's schedule is then
  ``Reconciled.schedule_override``, a ``DeepSpeedSchedule`` computing the JSON's real curve with deepspeed's formulas.

Step/LR mapping of a kept DeepSpeed scheduler. ``g(i)`` = the scheduler's LR at ``last_batch_iteration == i``; it is
built with ``i = -1`` and the *engine* steps it inside ``backward`` at each update, before the Trainer reads
``get_last_lr()``. So at ``global_step == N`` both the logged ``learning_rate`` and ``optimizer.param_groups[0]["lr"]``
are ``g(N-1)`` (``lr_at(N) == optimizer_lr_at(N)``), while update N itself ran with ``g(N-2)`` (``used_lr_at``).
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from tunewise.errors import UserError, raise_problems
from tunewise.files import read_json_object
from tunewise.plan.schedule import PlannedCurve

_DIR = Path(__file__).with_name("ds_configs")
BUILTIN_CONFIGS = {name: _DIR / f"{name}.json" for name in ("zero2", "zero3", "zero3_offload")}
SCHEDULER_MODES = ("flags", "keep")
# DeepSpeed scheduler -> the params its constructor takes (deepspeed/runtime/lr_schedules.py, 0.19.8)
DS_SCHEDULERS = {
    "WarmupLR": ("warmup_min_lr", "warmup_max_lr", "warmup_num_steps", "warmup_type", "last_batch_iteration"),
    "WarmupDecayLR": ("total_num_steps", "warmup_min_lr", "warmup_max_lr", "warmup_num_steps", "warmup_type",
                      "last_batch_iteration"),
    "WarmupCosineLR": ("total_num_steps", "warmup_min_ratio", "warmup_num_steps", "cos_min_ratio", "warmup_type",
                       "last_batch_iteration"),
}
_SHAPE = {"WarmupLR": "warm-up, then the LR stays flat at its peak for the rest of the run",
          "WarmupDecayLR": "warm-up, then linear decay to 0", "WarmupCosineLR": "warm-up, then cosine decay"}
_OTHER_SHAPE = "DeepSpeed's own LR curve"


def load_config(spec: str) -> tuple[dict, str]:
    """(config dict, label) for a built-in name or a JSON file path; a UserError for anything else."""
    path = BUILTIN_CONFIGS.get(spec)
    label = f"built-in '{spec}'" if path else str(spec)
    path = path or Path(spec)
    if not path.is_file():
        raise UserError(f"--deepspeed {spec}: not a built-in config ({', '.join(BUILTIN_CONFIGS)}) and no such file.")
    return read_json_object(path, f"DeepSpeed config {path}"), label


@dataclass(frozen=True)
class DeepSpeedSchedule(PlannedCurve):
    """A DeepSpeed scheduler kept from the JSON, evaluated in pure Python with deepspeed's float operations.
    Same interface as ``plan.LRSchedule``. ``warmup_steps`` is the JSON's ``warmup_num_steps`` after "auto" filling;
    deepspeed itself warms up over ``max(2, warmup_steps)`` (``effective_warmup``). ``learning_rate`` is the peak
    (``warmup_max_lr``, or the optimizer's lr for WarmupCosineLR); ``kwargs`` the other params."""

    def __post_init__(self):
        if self.scheduler not in DS_SCHEDULERS:
            raise UserError(f"DeepSpeed scheduler {self.scheduler!r} is not supported; use one of "
                            f"{', '.join(DS_SCHEDULERS)}.")

    @property
    def effective_warmup(self) -> int:
        return max(2, self.warmup_steps)

    @property
    def warmup_type(self) -> str:
        kind = self.kwargs.get("warmup_type", "log")
        return kind if kind in ("log", "linear") else "log"  # deepspeed: unknown types fall back to log

    def lr_after(self, i: int) -> float:
        """``g(i)``: the LR deepspeed's scheduler sets at ``last_batch_iteration == i`` (``i = -1`` at construction)."""
        kw, w, t = self.kwargs, self.effective_warmup, self.total_steps
        if self.scheduler == "WarmupCosineLR":
            if i < 0:
                return 0.0
            if i < w:
                ratio = 1.0 / math.log(w) * math.log(i + 1) if self.warmup_type == "log" else i / w
                lo = kw.get("warmup_min_ratio", 0.0)
                return self.learning_rate * (lo + ratio * (1. - lo))
            progress = min(1.0, (i - w + 1) / max(1, t - w))
            cmin = kw.get("cos_min_ratio", 0.0001)
            ratio = (1 + math.cos(math.pi * progress)) / 2
            return self.learning_rate * max(0.0, cmin + (1. - cmin) * ratio)
        lo = kw.get("warmup_min_lr", 0.0)
        if i < 0:
            return lo
        if i < w:
            gamma = 1.0 / math.log(w) * math.log(i + 1) if self.warmup_type == "log" else i / w
        elif self.scheduler == "WarmupDecayLR":
            gamma = max(0.0, float(t - i) / float(max(1.0, t - w)))
        else:
            gamma = 1.0
        return lo + ((self.learning_rate - lo) * gamma)

    def lr_at(self, step: int) -> float:
        """The ``learning_rate`` the Trainer logs at ``global_step == step`` (the engine has stepped ``step`` times)."""
        return self.lr_after(self._check(step) - 1)

    def optimizer_lr_at(self, step: int) -> float:
        """``optimizer.param_groups[0]["lr"]`` in ``on_step_end``/``on_log``: the same value as ``lr_at``."""
        return self.lr_after(self._check(step) - 1)

    def used_lr_at(self, step: int) -> float:
        """The LR optimizer update ``step`` (1-based) actually ran with: one scheduler step behind the log."""
        return self.lr_after(max(self._check(step) - 2, -1))

    def key_points(self) -> dict[str, tuple[int, float]]:
        return self.points(self.effective_warmup)

    def trainer_kwargs(self) -> dict:
        # The HF scheduler is never built (the engine builds the JSON's); warmup_steps must still be the JSON's
        # warmup_num_steps, which transformers compares with max(1, warmup_steps) at train start.
        return {"lr_scheduler_type": "constant_with_warmup", "warmup_steps": int(self.warmup_steps),
                "learning_rate": self.learning_rate, "lr_scheduler_kwargs": {}, "max_steps": self.total_steps}

    def describe(self) -> str:
        w, kind = self.effective_warmup, self.warmup_type
        after = {"WarmupLR": f"flat at {self.learning_rate:g}", "WarmupDecayLR": "linear decay to 0",
                 "WarmupCosineLR": f"cosine decay to {self.lr_after(self.total_steps):g}"}[self.scheduler]
        return (f"{self.scheduler}: {kind} warm-up from {self.lr_after(0):g} to {self.learning_rate:g} over {w} steps, "
                f"then {after} until step {self.total_steps}")


@dataclass
class Reconciled:
    """``config``: pass as ``TrainingArguments(deepspeed=config)``. ``warnings``: print once, on the main process.
    ``sources``: plan fields whose value came from the DeepSpeed JSON. ``schedule_override``: the kept DeepSpeed
    scheduler (use it instead of the flags' LRSchedule), or None."""

    config: dict
    label: str
    zero_stage: int | None
    warnings: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    schedule_override: DeepSpeedSchedule | None = None


def _node(config: dict, dotted: str) -> tuple[dict | None, str]:
    """(parent dict, leaf key) like HfDeepSpeedConfig.find_config_node; parent None when a node is missing."""
    *parents, leaf = dotted.split(".")
    for key in parents:
        config = config.get(key)
        if not isinstance(config, dict):
            return None, leaf
    return config, leaf


def _fill(config, dotted, value, flag, problems, must_match=True):
    """HfTrainerDeepSpeedConfig.fill_match: "auto" -> value; a different hard-coded value -> a problem."""
    parent, leaf = _node(config, dotted)
    if parent is None:
        return
    if parent.get(leaf) == "auto":
        parent[leaf] = value
    elif must_match and parent.get(leaf) is not None and parent[leaf] != value:
        problems.append(f"{dotted} = {json.dumps(parent[leaf])} but {flag} gives {json.dumps(value)}")


def _flag(flags: dict, name: str, default=None):
    value = flags.get(name, default)
    if value is None:
        raise ValueError(f"reconcile: flags[{name!r}] is required")
    return value


def reconcile(spec: str, flags: dict, world_size: int, total_steps: int, warmup_steps: int,
              keep_scheduler: bool = False) -> Reconciled:
    """Load ``spec`` (built-in name or JSON path), fill "auto" values from ``flags``, check contradictions, and apply
    the scheduler/optimizer policy (see the module docstring). ``flags``: learning_rate, weight_decay,
    per_device_train_batch_size, gradient_accumulation_steps, max_grad_norm, lr_scheduler_type, torch_dtype, and
    optionally adam_beta1/adam_beta2/adam_epsilon (TrainingArguments defaults) and bf16/fp16 (the values passed to
    TrainingArguments; default: derived from torch_dtype)."""
    config, label = load_config(spec)
    config = copy.deepcopy(config)
    lr, micro = _flag(flags, "learning_rate"), _flag(flags, "per_device_train_batch_size")
    accum = _flag(flags, "gradient_accumulation_steps")
    dtype = flags.get("torch_dtype", "auto")
    bf16, fp16 = flags.get("bf16", dtype == "bfloat16"), flags.get("fp16", dtype == "float16")
    problems: list[str] = []
    _fill(config, "train_micro_batch_size_per_gpu", micro, f"--per_device_train_batch_size {micro}", problems)
    _fill(config, "gradient_accumulation_steps", accum, f"--gradient_accumulation_steps {accum}", problems)
    _fill(config, "train_batch_size", world_size * micro * accum,
          f"world size {world_size} x --per_device_train_batch_size {micro} x --gradient_accumulation_steps {accum}",
          problems)
    clip = _flag(flags, "max_grad_norm")
    _fill(config, "gradient_clipping", clip, f"--max_grad_norm {clip}", problems)
    # mixed precision is CUDA's: on a CPU --torch_dtype bfloat16/float16 gives false, and the reason is the machine
    precision = f"--torch_dtype {dtype}" + ("" if flags.get("cuda", True) else
                                            " on this machine, which has no CUDA GPU (fp16/bf16 mixed precision runs "
                                            'on CUDA only; on a CPU set the block\'s "enabled" to "auto")')
    _fill(config, "fp16.enabled", bool(fp16), precision, problems)
    _fill(config, "bf16.enabled", bool(bf16), precision, problems)

    removed, notes, sources, override = [], [], {}, None
    if "optimizer" in config:
        block = copy.deepcopy(config["optimizer"])
        betas = [flags.get("adam_beta1", 0.9), flags.get("adam_beta2", 0.999)]
        eps, wd = flags.get("adam_epsilon", 1e-8), _flag(flags, "weight_decay")
        _fill(config, "optimizer.params.lr", lr, f"--learning_rate {lr}", problems)
        _fill(config, "optimizer.params.betas", betas, f"adam betas {betas}", problems)
        _fill(config, "optimizer.params.eps", eps, f"adam epsilon {eps}", problems)
        _fill(config, "optimizer.params.weight_decay", wd, f"--weight_decay {wd}", problems)
        del config["optimizer"]
        removed.append(f'"optimizer" block {json.dumps(block)} (the Trainer\'s AdamW with --learning_rate {lr:g} '
                       f'and --weight_decay {wd:g} is used instead)')
    if "scheduler" in config:
        block = copy.deepcopy(config["scheduler"])
        if keep_scheduler:
            override = _kept_schedule(config, label, lr, total_steps, warmup_steps, problems)
            if override is not None:  # (None: problems were recorded, raised below)
                sources = {"scheduler": "deepspeed", **{k: "deepspeed" for k in override.kwargs}}
                notes.append(f'DeepSpeed config {label}: using its "scheduler" block {json.dumps(block)} '
                             f"(--deepspeed_scheduler keep). It replaces --lr_scheduler_type "
                             f"{flags.get('lr_scheduler_type')}: {override.describe()}. The plan shows this curve.")
        else:
            kind = block.get("type") if isinstance(block, dict) else None
            del config["scheduler"]
            removed.append(f'"scheduler" block {json.dumps(block)} '
                           f"({_SHAPE.get(kind, _OTHER_SHAPE)}, overriding --lr_scheduler_type)")
    elif keep_scheduler:
        notes.append(f'DeepSpeed config {label} has no "scheduler" block: --deepspeed_scheduler keep changes nothing; '
                     f"the flags decide the LR schedule.")
    offload = (config.get("zero_optimization") or {}).get("offload_optimizer") or {}
    if offload.get("device") in ("cpu", "nvme"):
        if config.get("zero_force_ds_cpu_optimizer") is True:
            problems.append('zero_force_ds_cpu_optimizer = true, but optimizer offload with the Trainer\'s AdamW '
                            'needs false')
        config.setdefault("zero_force_ds_cpu_optimizer", False)
    raise_problems(problems, f"DeepSpeed config {label} contradicts the flags: ", "; ",
                   '. Set these keys to "auto" (or remove them) so the flags decide, or change the flags.')
    warnings = []
    if removed:
        text = f"DeepSpeed config {label}: removed its " + " and its ".join(removed) + "."
        if "scheduler" not in config:  # not kept
            text += (f" The flags decide the LR schedule: --lr_scheduler_type {flags.get('lr_scheduler_type')}, "
                     f"peak {lr:g}, {warmup_steps} warm-up steps of {total_steps}.")
        if any(r.startswith('"scheduler"') for r in removed):
            text += " Pass --deepspeed_scheduler keep to use the JSON's scheduler instead."
        warnings.append(text)
    stage = (config.get("zero_optimization") or {}).get("stage")
    return Reconciled(config, label, stage, warnings + notes, sources, override)


def _kept_schedule(config, label, lr, total_steps, warmup_steps, problems) -> DeepSpeedSchedule | None:
    block = config["scheduler"]
    kind = block.get("type") if isinstance(block, dict) else None
    if kind not in DS_SCHEDULERS:
        raise UserError(f'DeepSpeed config {label}: --deepspeed_scheduler keep supports "scheduler" types '
                        f"{', '.join(DS_SCHEDULERS)}, not {kind!r}; use --deepspeed_scheduler flags.")
    params = block.setdefault("params", {})
    if not isinstance(params, dict):
        raise UserError(f'DeepSpeed config {label}: "scheduler"."params" must be an object, got {json.dumps(params)}.')
    unknown = sorted(set(params) - set(DS_SCHEDULERS[kind]))
    if unknown:
        raise UserError(f"DeepSpeed config {label}: scheduler {kind} does not take {', '.join(unknown)} "
                        f"(allowed: {', '.join(DS_SCHEDULERS[kind])}).")
    # transformers: warmup_min_lr fill-only 0; warmup_max_lr must match learning_rate; total_num_steps and
    # warmup_num_steps (max(1, warmup)) filled or checked at train start.
    warm = max(1, warmup_steps)
    _fill(config, "scheduler.params.warmup_min_lr", 0, "", problems, must_match=False)
    _fill(config, "scheduler.params.warmup_max_lr", lr, f"--learning_rate {lr}", problems)
    _fill(config, "scheduler.params.total_num_steps", total_steps, f"the plan's {total_steps} total steps", problems)
    _fill(config, "scheduler.params.warmup_num_steps", warm, f"the plan's {warmup_steps} warm-up steps", problems)
    # Keys transformers does not check when absent, but whose deepspeed default would contradict the flags.
    if kind != "WarmupLR" and "total_num_steps" not in params:
        problems.append(f'scheduler.params.total_num_steps is missing ({kind} needs it; set it to "auto")')
    if "warmup_num_steps" not in params and warm != 1000:
        problems.append(f"scheduler.params.warmup_num_steps is missing, so deepspeed warms up over 1000 steps, but "
                        f"the plan has {warmup_steps} warm-up steps (set it to \"auto\")")
    if kind == "WarmupDecayLR" and "warmup_max_lr" not in params and lr != 0.001:
        problems.append(f"scheduler.params.warmup_max_lr is missing, so WarmupDecayLR peaks at 0.001 (deepspeed's "
                        f'default), but --learning_rate is {lr} (set it to "auto")')
    if params.get("last_batch_iteration", -1) != -1:
        problems.append("scheduler.params.last_batch_iteration must be -1 (resuming is the checkpoint's job)")
    values = {k: v for k, v in params.items()
              if k not in ("warmup_num_steps", "total_num_steps", "warmup_max_lr", "last_batch_iteration")}
    for key, value in values.items():
        if key != "warmup_type" and (isinstance(value, bool) or not isinstance(value, (int, float))):
            problems.append(f"scheduler.params.{key} = {json.dumps(value)} must be a number (per-group lists and "
                            f'"auto" are not supported)')
    if problems:
        return None
    return DeepSpeedSchedule(kind, lr, warm, total_steps, values)
