"""The trainer of a resolved Run, built in one place for every recipe: the recipe's config class filled from the
run (with its own fields), its models, batches and dataset, and the callbacks every run has (logging.jsonl, the
progress bar, NaN guard, best/early stop, the retention watch, atomic checkpoint publishing, the schedule guard,
signals and trackers). Nothing is trained here (tunewise.train.fit)."""
from __future__ import annotations

import importlib
import os
from pathlib import Path

from tunewise import ranks
from tunewise.plan.run import Run, mixed_precision

# probes in a row past the threshold before --early_stop_on retention stops: one probe can catch a transient dip
# (the demo recipe scores 0.74 at step 500, just after the warm-up peak, and 0.92 from step 1,500 on)
DEFAULT_RETENTION_PATIENCE = 2


def build_trainer(run: Run, run_dir: Path, resume: Path | None = None, callbacks: list | None = None):
    """The recipe's trainer, saving into the run directory's staging folder, with the shared callbacks (or the
    given ones); a UserError when the model or its adapter cannot be loaded."""
    from tunewise.train.fsdp import check_active
    from tunewise.train.rundir import STAGING

    recipe = run.recipe
    # the trainer's class and the callbacks before the models: what they import is the process's, not the
    # training's (the memory estimate tells them apart: tests/plan/test_memory.py)
    trainer_class = import_object(recipe.trainer)
    callbacks = callbacks_for(run, run_dir, resume) if callbacks is None else callbacks
    models = recipe.models(run)
    batches = recipe.batches(run, models["model"])  # sft: the rows check runs the model's first layers
    trainer = trainer_class(
        **models,
        # the config after the models: with a ZeRO-3 config, transformers would otherwise load them partitioned
        args=trainer_config(run, run_dir / STAGING),
        train_dataset=recipe.dataset(run.train_rows),
        eval_dataset=recipe.dataset(run.val_rows) if run.val_rows else None,
        processing_class=run.tokenizer,
        callbacks=callbacks,
        **batches,
    )
    check_active(trainer, run)
    from tunewise.train.completions import CompletionsLog

    for callback in callbacks:
        if isinstance(callback, CompletionsLog):  # it reads the trainer's completion table
            callback.attach(trainer)
    return trainer


def import_object(dotted: str):
    """`module.Name` -> the object (the recipes name their trainer and config classes this way: imported only when
    a run builds them)."""
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def trainer_config(run: Run, staging: Path):
    """The recipe's config class (TrainingArguments or TRL's subclass of it) from the run: the shared settings
    here, the recipe's own fields (config_fields) beside them (and over them, where a recipe differs)."""
    import torch

    from tunewise.train.fsdp import cpu_state as fsdp_cpu_state

    args = run.args
    bf16, fp16 = mixed_precision(args.torch_dtype)
    # under FSDP, --gradient_checkpointing is the model's own unless the fsdp_config chose FSDP's (plan/fsdp.py)
    checkpointing = run.fsdp.model_checkpointing if run.fsdp else args.gradient_checkpointing
    shared = dict(
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
        ddp_backend="gloo" if not torch.cuda.is_available() and ranks.under_launcher() else None,
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
    return import_object(run.recipe.config)(**{**shared, **run.recipe.config_fields(args)})


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


def callbacks_for(run: Run, run_dir: Path, resume: Path | None = None) -> list:
    """The callbacks every trainer gets: logging.jsonl with planned_lr, the progress
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
    if getattr(args, "log_completions", False) and ranks.is_main_process():  # GRPO's
        from tunewise.train.completions import FILE, CompletionsLog

        extra.append(CompletionsLog(run_dir / FILE, resume_step=step_of(resume) if resume else None))
    if ranks.is_main_process():
        from tunewise.train.trackers import tracker_callbacks

        trackers, notes = tracker_callbacks(args.report_to, run_dir)
        extra += trackers
        for note in notes:
            print(note, flush=True)
    return extra


