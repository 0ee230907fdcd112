"""A sweep's evaluation: each trial's last checkpoint scored on the same prompts as the base model, whose scores
are computed once per sweep and kept in SWEEP_DIR/base_eval.json (tunewise.evaluate does the scoring)."""
from __future__ import annotations

from pathlib import Path

from tunewise.files import read_json, write_json_atomic
from tunewise.sweep.grid import Grid, SweepArgs, Trial


def eval_settings(options: SweepArgs) -> dict:
    """The evaluation flags a trial's record and the base model's scores are kept for (others: evaluate again)."""
    return {"general_limit": options.eval_general_limit, "max_new_tokens": options.eval_max_new_tokens}


def _eval_args(options: SweepArgs, system: str | None = None):
    from tunewise.evaluate.cli import EvalArgs

    return EvalArgs(max_new_tokens=options.eval_max_new_tokens, retention_baseline=False, system=system)


def _suite(options: SweepArgs, target):
    from tunewise.evaluate.cli import build_suite

    suite = build_suite(_eval_args(options), [target])
    if options.eval_general_limit:
        suite.general = suite.general[:options.eval_general_limit]
    return suite


def baselines(path: Path) -> list[dict]:
    """The base model's scores kept so far (base_eval.json; [] when it is missing or unreadable)."""
    known = read_json(path)
    return [b for b in known if isinstance(b, dict)] if isinstance(known, list) else []


def base_evaluation(grid: Grid, target, suite) -> dict:
    """The base model's scores on the sweep's prompts, computed once and kept in base_eval.json."""
    from tunewise.evaluate.cli import describe, run_one

    model = target.run_args.get("model")
    key = {"model": model, "system": grid.system, "target": suite.target.as_dict(), **eval_settings(grid.options)}
    path = grid.sweep_dir / "base_eval.json"
    known = baselines(path)
    for cached in known:
        if cached.get("key") == key:
            return cached
    print(f"evaluating the base model {model} once (the retention baseline) ...", flush=True)
    result = run_one(_eval_args(grid.options, grid.system), describe(model, []), suite)
    m = result["metrics"]
    base = {"key": key, "model": model, "identity_accuracy": m["identity_accuracy"],
            "identity_claims_old": m["identity_claims_old"], "general_accuracy": m["general_accuracy"],
            "general_count": len(suite.general)}
    write_json_atomic(path, [*known, base])
    return base


def evaluate_trial(grid: Grid, trial: Trial) -> tuple[dict, dict]:
    """(metrics, base) of the trial's last checkpoint; the full report goes to TRIAL/eval.json."""
    from tunewise.evaluate.cli import describe, run_one

    ckpt = trial.dir / "last"
    if not ckpt.exists():
        raise RuntimeError("no checkpoint was written")
    target = describe(None, [str(ckpt.resolve())])
    suite = _suite(grid.options, target)
    base = base_evaluation(grid, target, suite)
    result = run_one(_eval_args(grid.options), target, suite)
    m = result["metrics"]
    m["general_accuracy_base"] = base["general_accuracy"]
    m["general_retention"] = (m["general_accuracy"] / base["general_accuracy"]
                              if m["general_accuracy"] is not None and base["general_accuracy"] else None)
    write_json_atomic(trial.dir / "eval.json", result)
    return m, base
