"""Final loss and loss trend of a run's logged training losses (pure functions; the rule is printed in results.md).

The trend looks at the window of the last 30 % of the logged losses (at least 4), fits a straight line to it and
compares the line's fall over one more window, and the scatter about it, with the loss level. Thresholds were
chosen on the embedded model's self_cognition runs (logging every 5 steps, batch 1, so the per-log loss is noisy).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

WINDOW_SHARE = 0.3  # the window: the last 30 % of the logged losses
MIN_WINDOW = 4  # ... and at least this many
END_SHARE = 0.1  # start / final loss: mean of the first / last 10 % of the logged losses
FLOOR = 0.05  # scale = max(window mean, FLOOR x start loss): a loss near 0 is not measured against itself
NOISE = 0.5  # oscillating: scatter about the line > NOISE x scale (and larger than the line's fall)
FALLING = 0.2  # still falling: the line falls by more than FALLING x scale over one more window, or
RATE = 0.1  # ... by more than RATE x the run's average fall per window (a cosine tail slows a slow learner down)
RISING = 0.5  # diverged: the line rises by more than RISING x scale over one more window

TRENDS = ("converged", "still falling", "oscillating", "diverged")

RULE = (
    f"**Loss trend.** *start* and *final loss* are the means of the first and last {END_SHARE:.0%} of the logged "
    f"training losses. The *window* is the last {WINDOW_SHARE:.0%} of them (at least {MIN_WINDOW}); a straight line "
    f"is fitted to it; *fall* = how much the line drops over one more window, *scatter* = the standard deviation "
    f"about the line, *scale* = max(window mean, {FLOOR:g} × start). "
    f"**diverged**: a loss is NaN/inf, or final loss ≥ start, or the line rises by more than {RISING:g} × scale; "
    f"**oscillating**: scatter > {NOISE:g} × scale and scatter ≥ fall; "
    f"**still falling**: fall > {FALLING:g} × scale, or fall > {RATE:g} × the run's average fall per window "
    f"((start − final loss) × window / logged losses); **converged**: otherwise. "
    f"Runs with fewer than {MIN_WINDOW + 1} logged losses are *too short* to judge. With a decaying schedule "
    f"(cosine, the default) every curve flattens at the end as the learning rate runs out: read a *converged* "
    f"label together with the final loss."
)


@dataclass
class Trend:
    label: str  # one of TRENDS, "too short" or "no losses logged"
    start: float | None = None
    final: float | None = None
    level: float | None = None
    fall: float | None = None
    scatter: float | None = None
    scale: float | None = None

    def as_dict(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v) for k, v in vars(self).items()}


def _mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs)


def end_mean(losses: list[float], last: bool = True) -> float | None:
    """Mean of the last (or first) END_SHARE of the losses, at least one value."""
    if not losses:
        return None
    n = max(1, math.ceil(END_SHARE * len(losses)))
    return _mean(losses[-n:] if last else losses[:n])


def final_loss(losses: list[float]) -> float | None:
    return end_mean(losses, last=True)


def loss_trend(losses: list[float]) -> Trend:
    losses = [float(x) for x in losses]
    if not losses:
        return Trend("no losses logged")
    if not all(math.isfinite(x) for x in losses):
        return Trend("diverged", final=float("nan"))
    start, final = end_mean(losses, last=False), end_mean(losses)
    if len(losses) < MIN_WINDOW + 1:
        return Trend("too short", start, final)
    k = max(MIN_WINDOW, math.ceil(WINDOW_SHARE * len(losses)))
    window = losses[-k:]
    xs = range(k)
    x_mean, level = _mean(xs), _mean(window)
    slope = sum((x - x_mean) * (y - level) for x, y in zip(xs, window)) / sum((x - x_mean) ** 2 for x in xs)
    residuals = [y - (level + slope * (x - x_mean)) for x, y in zip(xs, window)]
    scatter = math.sqrt(_mean(r * r for r in residuals))
    fall = -slope * k
    scale = max(level, FLOOR * start)
    trend = Trend("converged", start, final, level, fall, scatter, scale)
    if final >= start or -fall > RISING * scale:
        trend.label = "diverged"
    elif scatter > NOISE * scale and scatter >= fall:
        trend.label = "oscillating"
    elif fall > FALLING * scale or fall > RATE * (start - final) * k / len(losses):
        trend.label = "still falling"
    return trend
