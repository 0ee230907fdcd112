"""The single source of truth for a run's step count and learning-rate curve.

Formulas mirror transformers 5.23 (``optimization.py`` lambdas, ``Trainer.set_initial_training_values``,
``TrainingArguments.get_warmup_steps``) operation for operation, so the values are bit-identical, not just close.

Step/LR mapping (plain Trainer loop, and DeepSpeed with an HF optimizer + HF scheduler). Let ``f(k)`` be the
scheduler's multiplier after ``k`` calls to ``scheduler.step()`` (``LambdaLR``: ``lr = base_lr * f(k)``).
Update number ``N`` (1-based) runs ``optimizer.step()`` with ``lr * f(N-1)``; the Trainer then reads
``get_last_lr()`` (still ``f(N-1)``), calls ``scheduler.step()``, sets ``global_step = N`` and logs the value read.
Hence:

* ``lr_at(N)`` = ``lr * f(N-1)`` = ``log_history[..]["learning_rate"]`` where ``step == N`` = LR used by update N.
  ``lr_at(0)`` is the LR the optimizer holds before training (``f(0)``, same as ``lr_at(1)``).
* ``optimizer_lr_at(N)`` = ``lr * f(N)`` = ``optimizer.param_groups[0]["lr"]`` in ``on_step_end``/``on_log``
  callbacks when ``state.global_step == N`` (the scheduler has already stepped).

When the DeepSpeed *engine* steps the scheduler (an ``optimizer`` block in the DeepSpeed config, so the HF
scheduler is handed to the engine), the step happens inside ``backward`` and the logged value becomes
``optimizer_lr_at(N)``; ``optimizer_lr_at`` is right for the param-group check in both cases. A skipped step
(fp16 overflow) does not step the scheduler, shifting the curve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tunewise.errors import UserError

SCHEDULERS = ("linear", "cosine", "cosine_with_min_lr", "constant", "constant_with_warmup", "warmup_stable_decay")
_KWARGS = {  # keys each transformers scheduler accepts through TrainingArguments.lr_scheduler_kwargs
    "linear": (),
    "cosine": ("num_cycles",),
    "cosine_with_min_lr": ("num_cycles", "min_lr", "min_lr_rate"),
    "constant": (),  # get_scheduler ignores kwargs and warmup for "constant": reject them rather than ignore
    "constant_with_warmup": (),
    "warmup_stable_decay": (
        "num_decay_steps", "num_stable_steps", "warmup_type", "decay_type", "min_lr_ratio", "num_cycles",
    ),
}
_SHAPES = ("linear", "cosine", "1-sqrt")


def _count(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < minimum:
        raise UserError(f"{name} must be a whole number >= {minimum}, got {value!r}.")
    return int(value)


def _number(name: str, value, lo: float, hi: float, hi_open: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < lo or value > hi or (hi_open and value == hi):
        raise UserError(f"{name} must be in [{lo:g}, {hi:g}{')' if hi_open else ']'}, got {value!r}.")
    return value


@dataclass(frozen=True)
class StepPlan:
    """Optimizer-step arithmetic exactly as the transformers Trainer (with accelerate's sharded dataloader) does it."""

    num_samples: int
    world_size: int
    per_device_train_batch_size: int
    gradient_accumulation_steps: int
    num_train_epochs: float
    max_steps: int
    dataloader_drop_last: bool
    batches_per_epoch_per_device: int
    steps_per_epoch: int
    total_steps: int
    global_batch_size: int

    @property
    def epochs_covered(self) -> float:
        return self.total_steps / self.steps_per_epoch

    def trainer_kwargs(self) -> dict:
        return {
            "per_device_train_batch_size": self.per_device_train_batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "dataloader_drop_last": self.dataloader_drop_last,
            "max_steps": self.total_steps,
        }


def plan_steps(num_samples, per_device_train_batch_size=1, gradient_accumulation_steps=1, world_size=1,
               num_train_epochs=1.0, max_steps=-1, dataloader_drop_last=False) -> StepPlan:
    """Batches per device: accelerate's ``BatchSamplerShard`` (even_batches, no split_batches) over a
    ``BatchSampler``: ceil(ceil(n/b)/W), or (n//b)//W with drop_last. Steps/epoch: ceil(batches/accum), at least 1
    (the last update of an epoch takes the leftover batches). Total: max_steps if > 0, else ceil(epochs*steps/epoch).
    """
    n = _count("number of training samples", num_samples, 1)
    b = _count("per_device_train_batch_size", per_device_train_batch_size, 1)
    ga = _count("gradient_accumulation_steps", gradient_accumulation_steps, 1)
    w = _count("world_size", world_size, 1)
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps == 0:
        raise UserError(f"max_steps must be a positive whole number, or -1 to derive it from epochs; "
                        f"got {max_steps!r}.")
    batches = (n // b) // w if dataloader_drop_last else -(-(-(-n // b)) // w)  # ceil(ceil(n/b)/w), in ints
    if batches == 0:
        raise UserError(f"{n} training samples give no full batch of {b} per device on {w} device(s) with "
                        "dataloader_drop_last; lower the batch size or turn drop_last off.")
    steps_per_epoch = max(batches // ga + int(batches % ga > 0), 1)
    if max_steps > 0:
        total = max_steps
    else:
        _number("num_train_epochs", num_train_epochs, 0.0, math.inf)
        total = math.ceil(num_train_epochs * steps_per_epoch)
        if total < 1:
            raise UserError(f"num_train_epochs={num_train_epochs!r} gives no optimizer step.")
    return StepPlan(n, w, b, ga, float(num_train_epochs), max_steps, bool(dataloader_drop_last),
                    batches, steps_per_epoch, total, b * ga * w)


def resolve_warmup(total_steps, warmup_ratio=None, warmup_steps=None) -> int:
    """Warmup in optimizer steps. A ratio rounds like ``TrainingArguments.get_warmup_steps``:
    ``math.ceil(total_steps * ratio)`` in floats, so 0.07 * 100 = 7.000000000000001 gives 8, not 7."""
    if warmup_ratio is not None and warmup_steps is not None:
        raise UserError("--warmup_ratio and --warmup_steps are both set; give one.")
    if warmup_ratio is not None:
        return math.ceil(total_steps * _number("warmup_ratio", warmup_ratio, 0.0, 1.0, hi_open=True))
    return 0 if warmup_steps is None else _count("warmup_steps", warmup_steps, 0)


@dataclass(frozen=True)
class PlannedCurve:
    """What every planned learning-rate schedule has (transformers' here, a kept DeepSpeed one in plan/deepspeed.py):
    the scheduler's name, its peak, warm-up and length, its options, and the curve its ``lr_at`` draws."""

    scheduler: str
    learning_rate: float
    warmup_steps: int
    total_steps: int
    kwargs: dict = field(default_factory=dict)

    def lr_at(self, step: int) -> float:
        raise NotImplementedError

    def _check(self, step) -> int:
        if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= self.total_steps:
            raise ValueError(f"step must be an int in [0, {self.total_steps}], got {step!r}")
        return step

    def curve(self) -> list[tuple[int, float]]:
        return [(step, self.lr_at(step)) for step in range(self.total_steps + 1)]

    def points(self, warmup: int, **more: int) -> dict[str, tuple[int, float]]:
        """Update numbers (1-based, as logged) and their LR: first update, halfway through the warm-up, first update
        at the peak, halfway through what follows, last update (and `more`)."""
        w, t = warmup, self.total_steps
        steps = {"start": 1, "mid_warmup": w // 2 + 1, "end_warmup": w + 1, "midpoint": w + (t - w) // 2 + 1,
                 "last": t, **more}
        return {name: (min(s, t), self.lr_at(min(s, t))) for name, s in steps.items()}


@dataclass(frozen=True)
class LRSchedule(PlannedCurve):
    """A transformers LR scheduler, evaluated in pure Python. ``kwargs`` is ``TrainingArguments.lr_scheduler_kwargs``.
    See the module docstring for what ``lr_at`` and ``optimizer_lr_at`` mean in Trainer terms."""

    def __post_init__(self):
        s, kw = self.scheduler, dict(self.kwargs)
        if s not in SCHEDULERS:
            raise UserError(f"Unknown LR scheduler {s!r}; choose one of: {', '.join(SCHEDULERS)}.")
        _number("learning_rate", self.learning_rate, 0.0, math.inf)
        if self.learning_rate <= 0:
            raise UserError(f"learning_rate must be > 0, got {self.learning_rate!r}.")
        total = _count("total_steps", self.total_steps, 1)
        warm = _count("warmup_steps", self.warmup_steps, 0)
        if warm and warm >= total:
            raise UserError(f"warmup_steps={warm} covers the whole run of {total} steps; the LR would never peak.")
        if s == "constant" and warm:
            raise UserError("The 'constant' scheduler ignores warmup; use 'constant_with_warmup'.")
        unknown = sorted(set(kw) - set(_KWARGS[s]))
        if unknown:
            allowed = ", ".join(_KWARGS[s]) or "none"
            raise UserError(f"LR scheduler {s!r} does not take {', '.join(unknown)} (allowed: {allowed}).")
        if "num_cycles" in kw:
            _number("num_cycles", kw["num_cycles"], 0.0, math.inf)
        if s == "cosine_with_min_lr":
            if ("min_lr" in kw) == ("min_lr_rate" in kw):
                raise UserError("cosine_with_min_lr needs exactly one of min_lr or min_lr_rate.")
            if "min_lr" in kw:
                _number("min_lr", kw["min_lr"], 0.0, self.learning_rate)
            else:
                _number("min_lr_rate", kw["min_lr_rate"], 0.0, 1.0)
        if s == "warmup_stable_decay":
            if "num_decay_steps" not in kw:
                raise UserError("warmup_stable_decay needs num_decay_steps.")
            decay = _count("num_decay_steps", kw["num_decay_steps"], 1)
            stable = total - warm - decay
            if "num_stable_steps" in kw:
                stable = _count("num_stable_steps", kw["num_stable_steps"], 0)
                if stable == total - warm - decay:
                    del kw["num_stable_steps"]  # equal to the derived value; passing both makes transformers warn
            if stable < 0 or warm + stable + decay > total:
                raise UserError(f"warmup_stable_decay: warmup {warm} + stable {max(stable, 0)} + decay {decay} "
                                f"steps do not fit in the run of {total} steps.")
            for key in ("warmup_type", "decay_type"):
                if kw.get(key, "linear") not in _SHAPES:
                    raise UserError(f"{key} must be one of {', '.join(_SHAPES)}, got {kw[key]!r}.")
            _number("min_lr_ratio", kw.get("min_lr_ratio", 0), 0.0, 1.0)
        object.__setattr__(self, "kwargs", kw)

    def factor(self, k: int):
        """The ``LambdaLR`` multiplier after ``k`` scheduler steps (transformers' lambda, same float operations)."""
        s, w, t, kw = self.scheduler, self.warmup_steps, self.total_steps, self.kwargs
        if s == "constant":
            return 1
        if s == "constant_with_warmup":
            return float(k) / float(max(1.0, w)) if k < w else 1.0
        if s == "warmup_stable_decay":
            return self._wsd_factor(k)
        if k < w:
            return float(k) / float(max(1, w))
        if s == "linear":
            return max(0.0, float(t - k) / float(max(1, t - w)))
        rate = kw.get("min_lr_rate", 0.0)
        if "min_lr" in kw:
            rate = kw["min_lr"] / self.learning_rate  # transformers: min_lr / optimizer.defaults["lr"]
        progress = float(k - w) / float(max(1, t - w))
        value = 0.5 * (1.0 + math.cos(math.pi * float(kw.get("num_cycles", 0.5)) * 2.0 * progress))
        return max(0, value * (1 - rate) + rate)

    def _wsd_phases(self) -> tuple[int, int]:
        """(stable, decay) steps of warmup_stable_decay; stable defaults to total - warmup - decay."""
        d = self.kwargs["num_decay_steps"]
        return self.kwargs.get("num_stable_steps", self.total_steps - self.warmup_steps - d), d

    def _wsd_factor(self, k: int):
        kw, w = self.kwargs, self.warmup_steps
        st, d = self._wsd_phases()
        m = kw.get("min_lr_ratio", 0)
        if k < w:
            p = float(k) / float(max(1, w))
            shape = kw.get("warmup_type", "linear")
            value = p if shape == "linear" else 0.5 * (1.0 - math.cos(math.pi * p)) if shape == "cosine" \
                else 1.0 - math.sqrt(1.0 - p)
            return max(0.0, value * (1.0 - m) + m)
        if k < w + st:
            return 1.0
        if k < w + st + d:
            p = float(k - w - st) / float(max(1, d))
            shape = kw.get("decay_type", "cosine")
            value = 1.0 - p if shape == "linear" else 1.0 - math.sqrt(p) if shape == "1-sqrt" \
                else 0.5 * (1.0 + math.cos(math.pi * float(kw.get("num_cycles", 0.5)) * 2.0 * p))
            return max(0.0, value * (1.0 - m) + m)
        return m

    def lr_at(self, step: int) -> float:
        """LR used by optimizer update ``step`` = the ``learning_rate`` the Trainer logs at ``global_step == step``."""
        return self.learning_rate * self.factor(max(self._check(step) - 1, 0))

    def optimizer_lr_at(self, step: int) -> float:
        """``optimizer.param_groups[0]["lr"]`` in ``on_step_end``/``on_log`` when ``global_step == step``."""
        return self.learning_rate * self.factor(self._check(step))

    def key_points(self) -> dict[str, tuple[int, float]]:
        """`points` (plus the first decay update for WSD)."""
        w = self.warmup_steps
        if self.scheduler == "warmup_stable_decay":
            return self.points(w, decay_start=w + self._wsd_phases()[0] + 1)
        return self.points(w)

    def trainer_kwargs(self) -> dict:
        return {"lr_scheduler_type": self.scheduler, "warmup_steps": int(self.warmup_steps),
                "learning_rate": self.learning_rate, "lr_scheduler_kwargs": dict(self.kwargs),
                "max_steps": self.total_steps}


def make_schedule(scheduler, learning_rate, total_steps, warmup_steps, **kwargs) -> LRSchedule:
    """Validated schedule; raises UserError for an unknown scheduler, bad kwargs, or phases that do not fit."""
    return LRSchedule(scheduler, learning_rate, warmup_steps, total_steps, kwargs)


def lr_relative_error(actual: float, planned: float, floor: float = 0.0) -> float:
    """|actual - planned| / max(|planned|, floor). With a zero denominator: 0.0 if equal, else inf.
    Pass ``floor`` = peak LR to judge near-zero values (warmup start, decay end) against the peak."""
    denom = max(abs(planned), floor)
    if denom == 0:
        return 0.0 if actual == planned else math.inf
    return abs(actual - planned) / denom
