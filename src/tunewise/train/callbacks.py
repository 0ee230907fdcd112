"""Trainer callbacks: metrics log, progress bar, atomic checkpoints, early stopping, schedule guard.

Each is a plain `transformers.TrainerCallback` handed to the Trainer; none subclasses a trainer.
"""
from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

from transformers import TrainerCallback

from tunewise.errors import UserError
from tunewise.files import read_jsonl, write_json_atomic
from tunewise.models.adapter_config import name_base
from tunewise.models.checkpoint import newest_checkpoint
from tunewise.train import rundir
from tunewise.trees import clear_trash


class MetricsLog(TrainerCallback):
    """Appends one JSON object per log event to logging.jsonl: step, epoch, loss, lr, planned_lr, grad_norm,
    tokens_per_s, eval_*; `latest` holds the last training values (for the progress bar)."""

    def __init__(self, path: Path, schedule, resume_step: int | None = None):
        self.path = Path(path)
        self.schedule = schedule
        self.resume_step = resume_step  # a resumed run: records past this step are logged again
        self.began = False  # the Trainer has loaded everything (a resumed checkpoint included) and starts training
        self.latest: dict = {}
        self._tokens = None
        self._time = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.began = True
        self._tokens, self._time = state.num_input_tokens_seen, time.perf_counter()
        if self.resume_step is not None and state.is_world_process_zero:
            rundir.clear_staging(self.path.parent)  # what a killed save or rotation left behind
            clear_trash(self.path.parent)
            dropped = rundir.truncate_log(self.path, self.resume_step)
            if dropped:
                print(f"note: {self.path}: {dropped} line(s) that were not whole JSON (cut short by a crash or a full "
                      "disk) were dropped.", flush=True)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4)}
        for key, value in logs.items():
            if key in ("learning_rate", "num_input_tokens_seen", "train_tokens_per_second"):
                continue
            record[key] = value
        if "learning_rate" in logs:
            record["lr"] = logs["learning_rate"]
            record["planned_lr"] = self.schedule.lr_at(state.global_step)
        if "loss" in logs:
            now, tokens = time.perf_counter(), state.num_input_tokens_seen
            if self._time is not None and now > self._time and tokens > self._tokens:  # GRPO counts none
                record["tokens_per_s"] = round((tokens - self._tokens) / (now - self._time), 1)
            self._tokens, self._time = tokens, now
            self.latest = record
        self.write(record)

    def write(self, record: dict) -> None:
        """Append one whole line (one write call, so a crash leaves at most a torn last line, which readers skip)."""
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def read(self) -> list[dict]:
        return read_jsonl(self.path)


class ProgressBar(TrainerCallback):
    """A tqdm bar over optimizer steps showing loss, lr and tokens/s (replaces the Trainer's default bar)."""

    def __init__(self, metrics: MetricsLog):
        self.metrics = metrics
        self.bar = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="train", dynamic_ncols=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is None or not logs:
            return
        latest = self.metrics.latest
        post = {}
        if "loss" in latest:
            post["loss"] = f"{latest['loss']:.4f}"
            post["lr"] = f"{latest.get('lr', 0):.2e}"
            if "tokens_per_s" in latest:
                post["tok/s"] = f"{latest['tokens_per_s']:.0f}"
        if "eval_loss" in logs:
            self.bar.write(f"step {state.global_step}: eval_loss {logs['eval_loss']:.4f}")
        self.bar.set_postfix(post, refresh=True)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class BestTracker(TrainerCallback):
    """Remembers the best step, and stops after `patience` evaluations without a lower eval loss.

    The best is the lowest eval loss, unless `by_eval_loss` is False: then another judge (the retention watch's
    combined score) names it through `consider`, and the eval loss only counts towards the patience."""

    def __init__(self, patience: int | None = None, by_eval_loss: bool = True):
        self.patience = patience
        self.by_eval_loss = by_eval_loss
        self.lowest_loss = math.inf
        self.best_value: float | None = None
        self.best_metric = "eval_loss"
        self.best_step: int | None = None
        self.bad_evals = 0
        self.stopped_early = False

    def consider(self, step: int, value: float, metric: str) -> None:
        """A higher-is-better score for `step`; a tie goes to the later step (it trained longer)."""
        if self.best_value is None or value >= self.best_value:
            self.best_value, self.best_step, self.best_metric = value, step, metric

    STATE_FILE = "tunewise_best.json"  # saved in every checkpoint, so a resumed run knows its best

    def state_dict(self) -> dict:
        return {"best_step": self.best_step, "best_value": self.best_value, "best_metric": self.best_metric,
                "lowest_loss": None if math.isinf(self.lowest_loss) else self.lowest_loss, "bad_evals": self.bad_evals}

    def restore(self, checkpoint: Path) -> None:
        """The tracker as it was when `checkpoint` was saved (a checkpoint from before this file existed: as new)."""
        path = Path(checkpoint) / self.STATE_FILE
        if not path.is_file():
            return
        saved = json.loads(path.read_text(encoding="utf-8"))
        self.best_step, self.best_value = saved["best_step"], saved["best_value"]
        self.best_metric, self.bad_evals = saved["best_metric"], saved["bad_evals"]
        self.lowest_loss = math.inf if saved["lowest_loss"] is None else saved["lowest_loss"]

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        loss = (metrics or {}).get("eval_loss")
        if loss is None:
            return
        if loss < self.lowest_loss:
            self.lowest_loss, self.bad_evals = loss, 0
            if self.by_eval_loss:
                self.best_value, self.best_step = loss, state.global_step
        else:
            self.bad_evals += 1
            if self.patience is not None and self.bad_evals >= self.patience:
                control.should_training_stop = True
                self.stopped_early = True


class PublishCheckpoints(TrainerCallback):
    """After the Trainer finished writing STAGING/checkpoint-N, rename it into the run directory, then rotate."""

    def __init__(self, run_dir: Path, save_total_limit: int | None, best: BestTracker, finite=None,
                 base_name: str | None = None):
        self.run_dir = Path(run_dir)
        self.base_name = base_name  # how a published adapter names its base (models.load.portable_name)
        self.limit = save_total_limit
        self.best = best
        self.finite = finite  # a tunewise.train.stops.FiniteGuard: a non-finite model is never published

    def best_checkpoint(self) -> Path | None:
        if self.best.best_step is None:
            return None
        path = self.run_dir / f"checkpoint-{self.best.best_step}"
        return path if path.exists() else None

    def on_save(self, args, state, control, **kwargs):
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()  # with ZeRO-3 every rank writes its shard: publish only once all have finished
        model = kwargs.get("model")
        finite = self.finite is None or model is None or self.finite.weights_finite(model)  # on every rank
        if not state.is_world_process_zero:
            return
        staged = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if not finite:
            rundir.clear_staging(self.run_dir)
            self.finite.stop(state.global_step, "weights in the checkpoint being saved (it was not published)")
        if staged.is_dir():
            write_json_atomic(staged / BestTracker.STATE_FILE, self.best.state_dict())
            if (self.run_dir / "args.json").is_file():  # a checkpoint copied on its own still names its run
                shutil.copyfile(self.run_dir / "args.json", staged / "args.json")
            if self.base_name is not None:
                name_base(staged, self.base_name)
            rundir.publish(staged, self.run_dir)
        rundir.rotate(self.run_dir, self.limit, self.best_checkpoint())


class ScheduleGuardError(UserError):
    """The optimizer left the plan: a one-paragraph error (exit 2) naming the step, both rates and the checkpoint
    kept."""


class ScheduleGuard(TrainerCallback):
    """Compares the optimizer's learning rate with the plan at every logging step.

    mode "error" stops the run on a mismatch beyond `tolerance` (relative), "warn" prints once, "off" does nothing.
    """

    CAUSES = ("a DeepSpeed JSON 'scheduler' block overriding --lr_scheduler_type, a custom optimizer or scheduler "
              "passed to the trainer, or a resumed run whose scheduler state does not match the plan")

    def __init__(self, schedule, mode: str = "error", tolerance: float = 1e-6, run_dir: Path | None = None):
        from tunewise.plan.schedule import lr_relative_error

        self.schedule, self.mode, self.tolerance, self.run_dir = schedule, mode, tolerance, run_dir
        self._error = lr_relative_error
        self.warned = False

    def on_log(self, args, state, control, logs=None, optimizer=None, **kwargs):
        if self.mode == "off" or not logs or "learning_rate" not in logs:
            return
        step = state.global_step
        # The Trainer logs the rate update N used (lr_at); the optimizer already holds the next one (optimizer_lr_at).
        checks = [("logged", logs["learning_rate"], self.schedule.lr_at(step))]
        if optimizer is not None:
            checks.append(("optimizer", optimizer.param_groups[0]["lr"], self.schedule.optimizer_lr_at(step)))
        for what, actual, planned in checks:
            if self._error(actual, planned, floor=self.schedule.learning_rate) <= self.tolerance:
                continue
            message = (f"schedule guard: at step {step} the {what} learning rate is {actual:.6g} but the plan says "
                       f"{planned:.6g}. Likely causes: {self.CAUSES}.")
            if self.mode == "error":
                kept = newest_checkpoint(self.run_dir)
                where = (f" The newest checkpoint, written before the mismatch was seen, is kept: {kept} (resume "
                         "from it with --resume_from_checkpoint once the cause is fixed)." if kept
                         else " No checkpoint had been written yet.")
                raise ScheduleGuardError(message + " The run stopped here; nothing after this step was saved." + where
                                         + " Use --schedule_guard warn to train on regardless.")
            if not self.warned:
                print("WARNING: " + message, flush=True)
                self.warned = True
