"""`tunewise sweep`: the grid's trials one after another, each trained, evaluated and recorded; then the results.

SWEEP_DIR/
  sweep.json                 the command, the axes and the trials
  base_eval.json             the base model's evaluation (once per sweep: the retention baseline)
  trials/NAME/               a plain `tunewise sft` run dir (--add_version false), plus train.log (its output),
                             eval.json (the full `tunewise eval` report of its last checkpoint) and
                             trial.json (the record; written atomically last: its presence marks the trial finished)
  results.csv  results.md  loss_curves.png     rewritten after every trial

Resuming: a trial whose trial.json says "ok" is skipped (its flags must be the same as now, else the sweep stops
before training anything); any other trial directory (interrupted, or failed) is removed and the trial run again.

Signals: from its start the sweep holds SIGTERM and SIGINT itself (`StopSignals`). The first one it receives stops it,
whatever its trial then does: the running trial gets the signal passed on and stops (at the end of its step; at once
when its process group was signalled too, or when it was still starting, before it had a handler of its own), and
the sweep waits for it; an evaluation is abandoned at once; a record or results being written are finished first.
No trial starts after it; the sweep exits with 128 + the signal (143, 130) and says how to continue (the same
command: finished trials are skipped, the stopped one starts again from scratch).
"""
from __future__ import annotations

import os
import shlex
import signal
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tunewise.command import Command
from tunewise.errors import Stopped, UserError, raise_problems
from tunewise.files import read_json
from tunewise.sweep.evaluation import baselines, eval_settings, evaluate_trial
from tunewise.sweep.grid import Grid, SweepArgs, Trial, parse_grid
from tunewise.sweep.signals import StopSignals, SweepInterrupted

TRIAL_RECORD = "trial.json"

HELP = """usage: tunewise sweep [tunewise sft flags; a scalar one as a comma list is a grid axis] [--output_dir DIR]

Runs every combination of the comma-list flags as a `tunewise sft` run, one after another, evaluates each one's
last checkpoint (identity accuracy zh/en, repetition, general retention against the base model) and writes
results.csv, results.md (table, rules, recommended trial) and loss_curves.png to --output_dir (default
output/sweep). Running the same command again skips finished trials and redoes unfinished ones.

  tunewise sweep --dataset self_cognition --model_name 小黄 'Xiao Huang' --model_author 魔搭 ModelScope \\
                 --learning_rate 1e-3,1e-4,5e-5 --num_train_epochs 3,5,10,15,20 --output_dir output/sweep

List flags (--dataset, --target_modules, --model_name, ...) and --system / --lr_scheduler_kwargs are never split;
values in a --config YAML are fixed. Flags of the sweep itself:
"""


def _write_json(path: Path, data) -> None:
    from tunewise.files import write_json_atomic

    write_json_atomic(path, data)


def plan_trials(grid: Grid) -> dict[str, int]:
    """Each trial's optimizer steps from its plan; data and plan errors surface here, before any training."""
    from tunewise.args import SftArgs
    from tunewise.flags import parse
    from tunewise.plan.resolve import resolve
    from tunewise.recipes import recipe

    steps, problems = {}, []
    for trial in grid.trials:
        args, sources, _ = parse(SftArgs, trial.full_argv())
        try:
            steps[trial.name] = resolve(recipe("sft"), args, sources).step_plan.total_steps
        except UserError as e:
            if str(e) not in problems:
                problems.append(str(e))
    raise_problems(problems)
    return steps


def _resolved(argv: list[str]) -> dict | None:
    """Every sft value the flags give (order and spelling of the flags do not matter); None if they do not parse."""
    import dataclasses

    from tunewise.args import SftArgs
    from tunewise.flags import parse

    try:
        return dataclasses.asdict(parse(SftArgs, [*argv, "--output_dir", "."])[0])
    except UserError:
        return None


def finished(trial: Trial, settings: dict) -> dict | None:
    """The trial's record when it finished with the same flags and evaluation; raises when its flags differ."""
    rec = read_json(trial.dir / TRIAL_RECORD)
    if not rec or rec.get("status") != "ok":
        return None
    if _resolved(rec.get("argv") or []) != _resolved(trial.argv) or rec.get("eval") != settings:
        raise UserError(f"{trial.dir} was run with other flags or evaluation settings "
                        f"({shlex.join(rec.get('argv') or [])}; eval {rec.get('eval')}); give another --output_dir, "
                        f"or delete that directory to run it again.")
    return rec


def running_log(trial: Trial) -> Path:
    return trial.dir.with_name(f".{trial.name}.train.log")


def train_trial(trial: Trial, signals: StopSignals) -> tuple[int, float]:
    """`tunewise sft` in a child process, its output in TRIAL/train.log. A child process per trial, not an in-process
    call: every trial starts from a fresh interpreter (no torch/accelerate/TensorBoard state, threads, seeds or
    memory carried from one trial to the next), a crash fails one trial only, and --nproc_per_node works as in sft.
    The cost is the interpreter start-up, a few seconds per trial. The log is written beside the trial's folder
    while sft runs (sft writes only into an empty folder) and moved into it at the end."""
    trial.dir.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    signals.where = f"during trial {trial.name} (training)"
    with signals.held():  # a signal is passed on to the trial and waited for; the sweep stops after this block
        with open(running_log(trial), "w", encoding="utf-8") as log:
            log.write(shlex.join(["tunewise", "sft", *trial.full_argv()]) + "\n")
            log.flush()
            rc = signals.run_child([sys.executable, "-m", "tunewise.cli", "sft", *trial.full_argv()], stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        trial.dir.mkdir(parents=True, exist_ok=True)  # sft made it, unless it failed before that
        os.replace(running_log(trial), trial.dir / "train.log")
    if rc in (130, 143):  # only the trial was signalled, not the sweep: it saved and stopped, and the sweep stops too
        raise Stopped(f"trial {trial.name} was stopped by a signal (exit {rc}); the sweep stops too. Finished trials "
                      "are kept: run the same command again to continue (that trial starts again).", rc)
    return rc, time.perf_counter() - start


def train_losses(run_dir: Path) -> list[dict]:
    from tunewise.files import read_jsonl

    return [e for e in read_jsonl(run_dir / "logging.jsonl") if "loss" in e]


def run_trial(grid: Grid, trial: Trial, steps: int, signals: StopSignals) -> tuple[dict, dict | None]:
    from tunewise.sweep.trend import loss_trend

    settings = eval_settings(grid.options)
    rec = {"name": trial.name, "status": "failed", "values": trial.values, "argv": trial.argv, "eval": settings,
           "total_steps": steps}
    rc, rec["train_seconds"] = train_trial(trial, signals)
    base = None
    if rc != 0:
        rec["error"] = f"exit {rc}, see trials/{trial.name}/train.log"
        tail = (trial.dir / "train.log").read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
        print("\n".join("    | " + line[-200:] for line in tail), file=sys.stderr)
    else:
        rec["loss"] = loss_trend([e["loss"] for e in train_losses(trial.dir)]).as_dict()
        start = time.perf_counter()
        signals.where = f"during trial {trial.name} (evaluation)"  # abandoned at once: the trial runs again
        try:
            rec["metrics"], base = evaluate_trial(grid, trial)
            rec["status"] = "ok"
        except RuntimeError as e:
            rec["error"] = f"evaluation: {e}"
        rec["eval_seconds"] = time.perf_counter() - start
    return rec, base  # run_grid writes the record (trial.json) and the results together


def write_results(grid: Grid, command: str, records: list[dict], base: dict | None) -> None:
    from tunewise.sweep import report

    best = report.recommend(records)
    root, total = grid.sweep_dir, len(grid.trials)
    report.write_csv(root / "results.csv", records, grid.axes, best)
    report.write_markdown(root / "results.md", command, records, grid.axes, best, base, total)
    report.plot_curves(root / "loss_curves.png", records, grid.axes,
                       {r["name"]: train_losses(grid.sweep_dir / "trials" / r["name"]) for r in records})


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def _done_line(rec: dict) -> str:
    if rec["status"] != "ok":
        return f"FAILED ({rec.get('error')})"
    m, loss = rec["metrics"], rec.get("loss") or {}
    ret, final, ident = m.get("general_retention"), loss.get("final"), m.get("identity_accuracy")
    return (f"final loss {'-' if final is None else f'{final:.4g}'} ({loss.get('label')}), identity "
            f"{'-' if ident is None else f'{100 * ident:.0f}%'}, retention {'-' if ret is None else f'{ret:.2f}'}")


class Clock:
    """Elapsed time, and the time left estimated from the seconds per optimizer step of the trials run so far."""

    def __init__(self, steps_left: int):
        self.start, self.steps_left, self.steps_done, self.seconds = time.perf_counter(), steps_left, 0, 0.0

    def done(self, steps: int, seconds: float) -> str:
        self.steps_left -= steps
        self.steps_done += steps
        self.seconds += seconds
        left = self.steps_left * self.seconds / self.steps_done if self.steps_done else 0
        return (f"elapsed {_minutes(time.perf_counter() - self.start)}"
                + (f", about {_minutes(left)} left" if self.steps_left > 0 else ""))


def check_sweep_dir(sweep_dir: Path) -> None:
    """A sweep continues in its own folder (sweep.json) and refuses a folder that holds anything else."""
    from tunewise.files import check_writable, listing

    check_writable(sweep_dir)
    shown = listing(sweep_dir)
    if shown and not (sweep_dir / "sweep.json").is_file():
        raise UserError(f"--output_dir {sweep_dir} holds files that are not a sweep's ({shown}); give a new or empty "
                        "folder (a sweep continues only in a folder it made).")


def run(grid: Grid, sources: dict, argv: list[str]) -> int:
    """The sweep, holding SIGTERM and SIGINT from its start: the first one received ends it with Stopped."""
    command = shlex.join(["tunewise", "sweep", *argv])
    signals, records = StopSignals(), []
    signals.install()
    try:
        return run_grid(grid, command, signals, records)
    except SweepInterrupted:
        raise stop_message(grid, command, signals, records) from None
    finally:
        signals.uninstall()


def stop_message(grid: Grid, command: str, signals: StopSignals, records: list[dict]) -> Stopped:
    total, ok = len(grid.trials), sum(r["status"] == "ok" for r in records)
    failed = len(records) - ok
    kept = (f"kept, with their results in {grid.sweep_dir / 'results.csv'}" if records else "nothing was recorded")
    message = (f"stopped by {signal.Signals(signals.received).name} {signals.where}: {ok} of {total} trials "
               f"finished ({kept}{f'; {failed} failed' if failed else ''}); no trial started after the signal. To "
               "continue, run the same command again (finished trials are skipped, an unfinished or failed one "
               f"starts again): {command}")
    return Stopped(message, 128 + signals.received)


def run_grid(grid: Grid, command: str, signals: StopSignals, records: list[dict]) -> int:
    """Every trial in turn; `records` holds the recorded ones (for the message when a signal stops the sweep)."""
    from tunewise.sweep.report import recommend

    settings = eval_settings(grid.options)
    previous = {t.name: finished(t, settings) for t in grid.trials}  # other flags than before stop here
    steps = plan_trials(grid)
    check_sweep_dir(grid.sweep_dir)
    grid.sweep_dir.mkdir(parents=True, exist_ok=True)
    with signals.held():
        _write_json(grid.sweep_dir / "sweep.json", {
            "command": command, "axes": {a.name: a.values for a in grid.axes},
            "trials": [{"name": t.name, "values": t.values, "steps": steps[t.name]} for t in grid.trials]})
    total = len(grid.trials)
    clock = Clock(sum(steps[t.name] for t in grid.trials if previous[t.name] is None))
    axes = ", ".join(f"{a.flag} {len(a.values)}" for a in grid.axes) or "no axis"
    print(f"sweep: {total} trial{'s' * (total > 1)} ({axes}) in {grid.sweep_dir}; "
          f"{sum(r is not None for r in previous.values())} finished earlier, {clock.steps_left} optimizer steps to run",
          flush=True)
    base = ([None] + baselines(grid.sweep_dir / "base_eval.json"))[-1]
    for k, trial in enumerate(grid.trials, 1):
        head = f"[{k}/{total}] {trial.name} ({', '.join(filter(None, [trial.flags_text(), f'{steps[trial.name]} steps']))})"
        rec = previous[trial.name]
        if rec is not None:
            print(f"{head}: skipped, finished earlier: {_done_line(rec)}", flush=True)
        else:
            if trial.dir.exists():
                shutil.rmtree(trial.dir)  # interrupted or failed before: start it afresh
            print(f"{head}: training ... (log: {running_log(trial)}, then {trial.dir / 'train.log'})", flush=True)
            t0 = time.perf_counter()
            rec, trial_base = run_trial(grid, trial, steps[trial.name], signals)
            base = trial_base or base
        with signals.held():  # the record and the results are written whole; a signal stops the sweep after them
            if previous[trial.name] is None:
                _write_json(trial.dir / TRIAL_RECORD, rec)
            records.append(rec)
            write_results(grid, command, records, base)
            if previous[trial.name] is None:
                seconds = time.perf_counter() - t0
                print(f"{head}: {_done_line(rec)}; {_minutes(seconds)} (train {rec['train_seconds']:.0f} s); "
                      f"{clock.done(steps[trial.name], seconds)}", flush=True)
            signals.where = f"between trials (after {trial.name})"
    best = recommend(records)
    if best is not None:
        print(f"recommended: {best['name']}: {_done_line(best)}")
    for name in ("results.md", "results.csv", "loss_curves.png"):
        print(f"wrote {grid.sweep_dir / name}")
    return 0 if all(r["status"] == "ok" for r in records) else 1


def sweep_help(cls) -> str:
    from tunewise.flags import help_text

    return HELP + help_text(cls, "sweep").split("\n", 3)[3]


COMMAND = Command(SweepArgs, run, help=sweep_help, parse=lambda argv: (parse_grid(argv), {}))
