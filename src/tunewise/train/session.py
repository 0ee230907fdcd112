"""A resolved Run (tunewise.train.recipe) trained: the run directory (new or resumed), TrainingArguments, the
callbacks, the trainer the recipe builds, and the end-of-run report; shared by `tunewise sft` and `tunewise dpo`.
"""
from __future__ import annotations

import errno
import os
import pickle
from pathlib import Path

from tunewise.errors import UserError, brief
from tunewise.train.recipe import Run, mixed_precision
from tunewise.train.rundir import STAGING

# probes in a row past the threshold before --early_stop_on retention stops: one probe can catch a transient dip
# (the demo recipe scores 0.74 at step 500, just after the warm-up peak, and 0.92 from step 1,500 on)
DEFAULT_RETENTION_PATIENCE = 2
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS)  # what a full or read-only disk raises


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def train(run: Run) -> Path:
    """Open (or resume) the run directory, build the recipe's trainer with the shared callbacks, train, report.
    A trainer that cannot be built (a model or adapter that fails to load) leaves no new run directory behind."""
    from tunewise.train import rundir

    try:
        run_dir, resume, created = open_run(run)
        callbacks, metrics, best = run_callbacks(run, run_dir, resume)
        try:
            trainer = run.recipe.build_trainer(run, run_dir / STAGING, callbacks)
        except UserError:
            if created:
                rundir.release_locks()
                rundir.remove_tree(run_dir)
            raise
        run_training(trainer, run_dir, resume, best, lambda: run.recipe.summary(metrics), run)
    finally:
        rundir.release_locks()
        if is_main_process():
            from tunewise.train.trackers import finish_trackers

            finish_trackers(run.args.report_to)
    return run_dir


def print_plan(run: Run) -> None:
    from tunewise.advise import plan_advice
    from tunewise.schedule.plan import format_plan

    for note in run.notes:
        print(note)
    print(format_plan(run.step_plan, run.schedule, run.sources, run.engine), flush=True)
    print("\n".join(run.device.lines()), flush=True)
    print(plan_advice(run, run.args.gpu_memory), flush=True)


def deepspeed_cpu_state(run: Run) -> dict | None:
    """DeepSpeed without CUDA: TrainingArguments ignores ddp_backend for DeepSpeed, so accelerate builds its state with
    no backend and reports a world size of 1 (the Trainer then fills train_batch_size for one process and deepspeed
    rejects it). Build the state with gloo first and let TrainingArguments use it. A run without a launcher gets a
    one-process group (deepspeed would otherwise look for MPI)."""
    import torch

    if run.deepspeed is None or torch.cuda.is_available():
        return None
    if "WORLD_SIZE" not in os.environ:
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR=run.args.master_addr,
                          MASTER_PORT=str(run.args.master_port))
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    from accelerate import PartialState

    PartialState(backend="gloo")
    return {"use_configured_state": True}


def training_arguments(run: Run, staging: Path):
    import torch
    from transformers import TrainingArguments

    from tunewise.train.fsdp import cpu_state as fsdp_cpu_state

    args = run.args
    bf16, fp16 = mixed_precision(args.torch_dtype)
    # under FSDP, --gradient_checkpointing is the model's own unless the fsdp_config chose FSDP's (schedule/fsdp.py)
    checkpointing = run.fsdp.model_checkpointing if run.fsdp else args.gradient_checkpointing
    return TrainingArguments(
        output_dir=str(staging),
        per_device_train_batch_size=args.per_device_train_batch_size,
        per_device_eval_batch_size=args.per_device_eval_batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        weight_decay=args.weight_decay,
        max_grad_norm=args.max_grad_norm,
        **run.schedule.trainer_kwargs(),
        logging_steps=args.logging_steps,
        logging_first_step=True,
        eval_strategy="steps" if run.val_rows else "no",
        eval_steps=args.eval_steps,
        save_strategy="steps",
        save_steps=args.save_steps,
        save_total_limit=None,  # rotation is ours: it runs after a checkpoint is published (rundir.rotate)
        seed=args.seed,
        data_seed=args.seed,
        bf16=bf16,
        fp16=fp16,
        deepspeed=run.deepspeed.config if run.deepspeed else None,
        fsdp=True if run.fsdp else None,  # transformers 5.23: True and an fsdp_config (the option string is deprecated)
        fsdp_config=dict(run.fsdp.config) if run.fsdp else None,  # a copy: transformers adds its defaults to it
        accelerator_config=deepspeed_cpu_state(run) or fsdp_cpu_state(run),
        activation_checkpointing=checkpointing,  # transformers 5's name for gradient_checkpointing
        activation_checkpointing_kwargs={"use_reentrant": False} if checkpointing else None,
        dataloader_num_workers=args.dataloader_num_workers,
        dataloader_pin_memory=torch.cuda.is_available(),  # pinning without a GPU only warns, once per epoch
        remove_unused_columns=False,
        include_num_input_tokens_seen="non_padding",
        ddp_backend="gloo" if not torch.cuda.is_available() and "LOCAL_RANK" in os.environ else None,
        # without CUDA, accelerate makes a multi-CPU (DDP) state only when told it is on CPU; otherwise each torchrun
        # process trains on its own (DeepSpeed builds its own state, deepspeed_cpu_state)
        use_cpu=not torch.cuda.is_available() and run.deepspeed is None,
        report_to=[],  # the trackers are added as callbacks (tunewise.train.trackers)
        run_name=staging.parent.name,  # the run directory's vN-... name, as the trackers show it
        logging_nan_inf_filter=False,  # a NaN loss is logged as NaN, not as the average of the steps before it
        disable_tqdm=False,
        train_sampling_strategy="group_by_length" if args.group_by_length else "random",
        torch_compile=args.torch_compile,
        use_liger_kernel=args.use_liger_kernel,
    )


def resume_target(run: Run) -> Path | None:
    """The checkpoint --resume_from_checkpoint names (or the newest, for 'latest'), checked to be complete and to
    have steps left: transformers would take one step past a finished run's last, off the planned schedule."""
    from tunewise.models.checkpoint import latest_checkpoint, trainer_state

    args = run.args
    if not args.resume_from_checkpoint:
        return None
    if args.resume_from_checkpoint == "latest":
        path = latest_checkpoint(args.output_dir)
    else:
        path = Path(args.resume_from_checkpoint)
        if not (path / "trainer_state.json").is_file():
            raise UserError(f"--resume_from_checkpoint {path}: not a checkpoint directory (no trainer_state.json).")
    state = trainer_state(path)
    if state is None:
        raise UserError(f"--resume_from_checkpoint {path}: its trainer_state.json cannot be read (cut short or "
                        "corrupt), so the checkpoint is not complete; resume from an earlier one.")
    done, total = state.get("global_step", 0), run.step_plan.total_steps
    if done >= total:
        raise UserError(f"--resume_from_checkpoint {path}: that checkpoint is at step {done} and the plan ends at "
                        f"step {total}, so nothing is left to train. To train further, start a new run from it "
                        f"(--adapters {path} for LoRA, --model {path} for a full fine-tune).")
    return path


def create_run_dir(run: Run) -> Path:
    """A new versioned run directory holding args.json and the plan files."""
    from tunewise.flags import to_json
    from tunewise.files import write_json_atomic
    from tunewise.schedule.plan import write_plan_files
    from tunewise.train import rundir

    run_dir = rundir.new_run_dir(run.args.output_dir, run.args.add_version, run.args.overwrite)
    record = to_json(run.args, dict(run.sources), run.recipe.command)
    record["model_path"] = str(Path(run.model_dir).resolve()) if Path(run.model_dir).exists() else run.model_dir
    write_json_atomic(run_dir / "args.json", record)
    write_plan_files(run_dir, run.step_plan, run.schedule, run.plan_record())
    return run_dir


def launch_run_dir(run: Run) -> Path:
    """The run directory a launching parent hands to its ranks: the resumed run's (locked here, for the whole
    launch) or a new one."""
    from tunewise.train import rundir

    resume = resume_target(run)
    if resume is None:
        return create_run_dir(run)
    rundir.acquire_lock(resume.parent)
    return resume.parent


def open_run(run: Run) -> tuple[Path, Path | None, bool]:
    """(run directory, checkpoint to resume from or None, made here): prints the plan unless a launching parent
    did, and either reuses (and locks) the resumed run's directory or makes a new one; with several processes
    global rank 0 decides and the others follow (launch.agree_on_run). A resumed run's log is cut back to its
    checkpoint only once the Trainer has loaded it (MetricsLog), so a failed resume changes nothing."""
    from tunewise.train import launch, rundir

    launched = os.environ.get(launch.RUN_DIR_ENV)
    if is_main_process() and not launched:
        print_plan(run)

    def decide() -> tuple[Path, Path | None, bool]:
        resume = resume_target(run)
        if resume is not None:
            if not launched:  # a launching parent holds the lock
                rundir.acquire_lock(resume.parent)
            return resume.parent, resume, False
        return (Path(launched), None, False) if launched else (create_run_dir(run), None, True)

    run_dir, resume, created = launch.agree_on_run(decide)
    if is_main_process():
        if resume is None:  # a resumed run cleans up once its checkpoint has loaded (MetricsLog.on_train_begin)
            rundir.clear_staging(run_dir)
        print(f"run directory: {run_dir}", flush=True)
    return run_dir, resume, created


def run_callbacks(run: Run, run_dir: Path, resume: Path | None = None) -> tuple[list, object, object]:
    """(callbacks for the trainer, the MetricsLog, the BestTracker): logging.jsonl with planned_lr, the progress
    bar, best/early stop, the retention watch, atomic checkpoint publishing, the schedule guard and TensorBoard."""
    from tunewise.models.checkpoint import newest_checkpoint, step_of
    from tunewise.train import callbacks
    from tunewise.train.stops import FiniteGuard, SignalStop

    args = run.args
    metrics = callbacks.MetricsLog(run_dir / "logging.jsonl", run.schedule,
                                   resume_step=step_of(resume) if resume else None)
    on_eval_loss = args.early_stop_on == "eval_loss"
    by_retention = not on_eval_loss and run.probes is not None and run.probes.has_identity
    best = callbacks.BestTracker(args.early_stop_patience if on_eval_loss else None, by_eval_loss=not by_retention)
    if resume is not None:
        best.restore(resume)  # rotation must keep the real best across the resume
    finite = FiniteGuard(args.nan_policy, kept=lambda: newest_checkpoint(run_dir))
    extra = [metrics, callbacks.ProgressBar(metrics), finite, best]
    if run.probes is not None:  # before publishing: the best it names is known when the checkpoint is rotated
        from tunewise.train.retention import RetentionWatch

        extra.append(RetentionWatch(run.probes, run.tokenizer, args.retention_eval_steps, args.retention_threshold,
                                    metrics, best, stop=not on_eval_loss,
                                    patience=args.early_stop_patience or DEFAULT_RETENTION_PATIENCE))
    from tunewise.models.load import portable_name

    publish = callbacks.PublishCheckpoints(run_dir, args.save_total_limit, best, finite,
                                           base_name=portable_name(run.start.base_name))
    extra += [publish,
              callbacks.ScheduleGuard(run.schedule, args.schedule_guard, run_dir=run_dir), SignalStop()]
    if is_main_process():
        from tunewise.train.trackers import tracker_callbacks

        trackers, notes = tracker_callbacks(args.report_to, run_dir)
        extra += trackers
        for note in notes:
            print(note, flush=True)
    return extra, metrics, best


def run_training(trainer, run_dir: Path, resume: Path | None, best, lines=lambda: [], run: Run | None = None) -> None:
    """Train (without transformers' own progress bar: ours shows loss, lr and tokens/s) within the device plan's
    compute context, then on the main process plot the run and print where its checkpoints are; `lines()` adds
    command-specific summary lines. Running out of memory is a UserError naming the step, the memory in use against
    `run`'s plan and the flags that reduce it."""
    import contextlib

    from transformers.trainer_callback import ProgressCallback

    from tunewise.models.checkpoint import newest_checkpoint
    from tunewise.train import oom, plots, rundir
    from tunewise.train.callbacks import MetricsLog, ProgressBar
    from tunewise.train.retention import RetentionWatch
    from tunewise.train.stops import SignalStop

    trainer.remove_callback(ProgressCallback)
    mine = {type(c): c for c in trainer.callback_handler.callbacks}
    signals, metrics = mine[SignalStop], mine[MetricsLog]
    oom.install_test_hook(trainer)  # TUNEWISE_TEST_OOM only: the tests' way to run out of memory at a chosen step
    signals.install()
    try:
        with run.device.compute() if run else contextlib.nullcontext():
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
        for callback in trainer.callback_handler.callbacks:
            if isinstance(callback, ProgressBar):
                callback.on_train_end(None, None, None)
    if not is_main_process():
        if signals.stopped_at is not None:
            raise signals.result(None)
        return
    rundir.clear_staging(run_dir)
    plots.plot_run(run_dir)
    best_cp, last_cp = (run_dir / "best").resolve(), (run_dir / "last").resolve()
    if best.stopped_early:
        print(f"early stop: no lower eval loss in {best.patience} evaluations.")
    watch = next((c for c in trainer.callback_handler.callbacks if isinstance(c, RetentionWatch)), None)
    for line in (watch_summary(watch) if watch else []) + lines():
        print(line)
    print(f"last checkpoint: {last_cp}")
    if best.best_step is not None:
        print(f"best checkpoint: {best_cp} ({best.best_metric} {best.best_value:.4f})")
    print(f"try it: tunewise infer --adapters {last_cp}", flush=True)
    if signals.stopped_at is not None:
        raise signals.result(last_cp)


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
