"""Fitting a built trainer, and the run's end-of-run summary.

`fit` trains (without transformers' own progress bar: ours shows loss, lr and tokens/s) within the device plan's
compute context and turns what stops a run into a UserError that says what to do: out of memory (the step, the
memory in use against the plan, the flags that reduce it), a full or read-only disk (the newest complete checkpoint
is kept), a checkpoint whose training state would not load. `summarise` (main process) plots the run and prints
the retention watch's scores, the recipe's own lines and where the checkpoints are.
"""
from __future__ import annotations

import errno
import pickle
from pathlib import Path

from tunewise import ranks
from tunewise.errors import UserError, brief
from tunewise.plan.run import Run

DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS)  # what a full or read-only disk raises


def fit(trainer, run: Run, run_dir: Path, resume: Path | None) -> None:
    """Train `trainer` to the plan's end (or to an early or signalled stop)."""
    from transformers.trainer_callback import ProgressCallback

    from tunewise.models.checkpoint import newest_checkpoint
    from tunewise.train import oom
    from tunewise.train.callbacks import MetricsLog, ProgressBar
    from tunewise.train.stops import SignalStop

    trainer.remove_callback(ProgressCallback)
    signals, metrics = callback(trainer, SignalStop), callback(trainer, MetricsLog)
    oom.install_test_hook(trainer)  # TUNEWISE_TEST_OOM only: the tests' way to run out of memory at a chosen step
    signals.install()
    try:
        with run.device.compute():
            trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    except (OSError, RuntimeError, ValueError, KeyError, EOFError, pickle.UnpicklingError, MemoryError) as e:
        if oom.is_out_of_memory(e):
            raise oom.out_of_memory_error(e, trainer.state.global_step, run_dir, run) from e
        if isinstance(e, OSError) and e.errno in DISK_ERRORS:
            raise UserError(f"{e.filename or run_dir}: {e.strerror}; the run stopped at step "
                            f"{trainer.state.global_step}. The newest complete checkpoint is kept: "
                            f"{newest_checkpoint(run_dir)}; free space "
                            "(or fix the permission), then continue with --resume_from_checkpoint latest.") from e
        if resume is None or metrics.began:
            raise
        # the checkpoint's optimizer, scheduler or RNG state would not load: nothing was changed yet
        raise UserError(f"--resume_from_checkpoint {resume}: cannot load its training state ({brief(e)}); the run "
                        "directory is unchanged. Resume "
                        "from an earlier checkpoint.") from e
    finally:  # a run stopped by an error ends its progress bar's line, so the error starts on its own
        signals.uninstall()
        progress = callback(trainer, ProgressBar)
        if progress is not None:
            progress.on_train_end(None, None, None)


def summarise(trainer, run: Run, run_dir: Path) -> None:
    """The end of a run: on the main process the plots and the summary lines; a run stopped by a signal then ends
    as Stopped (exit 130/143) on every process, naming its last checkpoint."""
    from tunewise.train import plots, rundir
    from tunewise.train.callbacks import BestTracker, MetricsLog
    from tunewise.train.retention import RetentionWatch
    from tunewise.train.stops import SignalStop

    signals = callback(trainer, SignalStop)
    if not ranks.is_main_process():
        if signals.stopped_at is not None:
            raise signals.result(None)
        return
    rundir.clear_staging(run_dir)
    plots.plot_run(run_dir)
    best = callback(trainer, BestTracker)
    best_cp, last_cp = (run_dir / "best").resolve(), (run_dir / "last").resolve()
    if best.stopped_early:
        print(f"early stop: no lower eval loss in {best.patience} evaluations.")
    watch = callback(trainer, RetentionWatch)
    for line in (watch_summary(watch) if watch else []) + run.recipe.summary(callback(trainer, MetricsLog)):
        print(line)
    print(f"last checkpoint: {last_cp}")
    if best.best_step is not None:
        print(f"best checkpoint: {best_cp} ({best.best_metric} {best.best_value:.4f})")
    if run.recipe.rlhf_type != "rm":  # a reward model scores sequences, it does not chat (tunewise.recipes.rm)
        print(f"try it: tunewise infer --adapters {last_cp}", flush=True)
    if signals.stopped_at is not None:
        raise signals.result(last_cp)


def callback(trainer, kind: type):
    """The trainer's callback of that class (None when it has none)."""
    return next((c for c in trainer.callback_handler.callbacks if isinstance(c, kind)), None)


def watch_summary(watch) -> list[str]:
    """The retention watch's end-of-run lines: start and end scores, its cost, and why it stopped the run."""
    if not watch.history:  # a resumed run that had nothing left to train
        return []
    first, last = watch.history[0], watch.history[-1]
    line = (f"retention watch: general skill {first['retention']:.3f} at step {first['step']} -> "
            f"{last['retention']:.3f} at step {last['step']}")
    low = min(watch.history, key=lambda r: r["retention"])
    if low is not first and low is not last:
        line += f" (lowest {low['retention']:.3f} at step {low['step']})"
    if "identity" in last:
        line += f"; identity {first['identity']:.3f} -> {last['identity']:.3f}"
        if "identity_mentions" in last:  # the clean score, and the replies that at least mention name and author
            line += f" (mentioned {first['identity_mentions']:.3f} -> {last['identity_mentions']:.3f})"
    line += f" ({len(watch.history)} probes, {watch.seconds:.1f} s)"
    return [line] + ([watch.stopped] if watch.stopped else [])
