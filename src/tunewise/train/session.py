"""The run machinery that `tunewise sft` and `tunewise dpo` share: model defaults, validation split, the plan and
DeepSpeed reconciliation, TrainingArguments, the run directory (new or resumed), the callbacks and the end report.

Each command owns only what differs: how rows are read and encoded, how the model (and reference) is built, and
which trainer runs it.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

from tunewise.errors import UserError

DEFAULT_WARMUP_RATIO = 0.05
# probes in a row past the threshold before --early_stop_on retention stops: one probe can catch a transient dip
# (the demo recipe scores 0.74 at step 500, just after the warm-up peak, and 0.92 from step 1,500 on)
DEFAULT_RETENTION_PATIENCE = 2


@dataclass
class Prepared:
    """Everything decided before a model is loaded: resolved args, tokenizer, encoded data and the plan."""

    args: object  # SftArgs or a subclass
    sources: dict
    model_dir: str
    tokenizer: object
    train_rows: list
    val_rows: list
    step_plan: object
    schedule: object
    notes: list
    deepspeed: object = None  # tunewise.schedule.deepspeed.Reconciled when --deepspeed is given
    start: object = None  # dpo: where the policy starts (tunewise.train.dpo.Start)
    probes: object = None  # tunewise.train.retention.Probes when --retention_eval_steps is given
    identity_rows: int = 0  # training rows of identity data (the advice's epoch rule reads it)


def planned_world_size(args) -> int:
    """The world size the run will have: torchrun's when running under it, else the one asked for."""
    from tunewise.train import launch

    return launch.world_size() if launch.under_launcher() else args.nproc_per_node * args.nnodes


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def mixed_precision(dtype: str) -> tuple[bool, bool]:
    """(bf16, fp16) for TrainingArguments (and the DeepSpeed JSON): only on CUDA."""
    import torch

    cuda = torch.cuda.is_available()
    return dtype == "bfloat16" and cuda, dtype == "float16" and cuda


def apply_model_defaults(args, sources: dict, model_dir: str, notes: list) -> None:
    """The model's own recommended values for flags left at their defaults (the embedded model ships some), and
    the default warmup ratio when neither warmup flag is given."""
    from tunewise.args import apply_recommended
    from tunewise.models.load import builtin_meta

    recommended = builtin_meta(model_dir).get("recommended", {}).get(args.recipe(), {})
    changed = apply_recommended(args, sources, recommended)
    if changed:
        notes.append(f"{args.model} recommends its own defaults: "
                     + ", ".join(f"{name}={getattr(args, name)}" for name in changed))
    if args.warmup_ratio is None and args.warmup_steps is None:
        args.warmup_ratio = DEFAULT_WARMUP_RATIO


def split_validation(items: list, ratio: float, seed: int) -> tuple[list, list]:
    """(validation, training): a seeded random `ratio` share held out for evaluation."""
    shuffled = items[:]
    random.Random(seed).shuffle(shuffled)
    n_val = max(1, round(len(shuffled) * ratio))
    if n_val >= len(shuffled):
        raise UserError(f"--split_dataset_ratio {ratio} leaves no training rows.")
    return shuffled[:n_val], shuffled[n_val:]


def load_and_encode(args, tokenizer, load, encode, notes: list, unit: str = "rows") -> tuple[list, list, object]:
    """(training rows, validation rows, the training rows' EncodeStats): --dataset, and --val_dataset or a
    --split_dataset_ratio share of it, read by `load(specs, names, authors, seed)` and encoded by
    `encode(tokenizer, items, system, max_length, truncation)` (conversations for sft, preference pairs for dpo)."""
    items = load(args.dataset, args.model_name, args.model_author, args.seed)
    val_items = load(args.val_dataset, args.model_name, args.model_author, args.seed)
    if not val_items and args.split_dataset_ratio > 0:
        val_items, items = split_validation(items, args.split_dataset_ratio, args.seed)
    train_rows, stats = encode(tokenizer, items, args.system, args.max_length, args.truncation_strategy)
    val_rows, _ = encode(tokenizer, val_items, args.system, args.max_length, args.truncation_strategy)
    notes.append(f"train data: {stats.summary()}" + (f"; validation: {len(val_rows)} {unit}" if val_rows else ""))
    if not train_rows:
        raise UserError(f"No training {unit} are left after encoding (all longer than --max_length?).")
    return train_rows, val_rows, stats


def make_prepared(args, sources: dict, model_dir: str, tokenizer, train_rows: list, val_rows: list,
                  notes: list, identity_rows: int = 0) -> Prepared:
    """Step arithmetic, warmup, schedule and (with --deepspeed) the reconciled DeepSpeed config for encoded rows."""
    from tunewise.schedule.plan import make_schedule, plan_steps, resolve_warmup

    step_plan = plan_steps(len(train_rows), args.per_device_train_batch_size, args.gradient_accumulation_steps,
                           planned_world_size(args), args.num_train_epochs, args.max_steps)
    warmup = resolve_warmup(step_plan.total_steps, args.warmup_ratio, args.warmup_steps)
    warmup_flag = "warmup_steps" if args.warmup_steps is not None else "warmup_ratio"
    sources = {**sources, "warmup": sources.get(warmup_flag, "default")}  # the plan's warm-up row says who set it
    if warmup and sources["warmup"] in ("default", "model"):
        # a warm-up the user never asked for yields where it cannot be honoured, instead of refusing the run
        why = ("the constant scheduler has none (constant_with_warmup has one)" if args.lr_scheduler_type == "constant"
               else f"it would cover the whole run of {step_plan.total_steps} steps" if warmup >= step_plan.total_steps
               else None)
        if why:
            notes.append(f"note: no warm-up: the {sources['warmup']} warm-up of {args.warmup_ratio:g} ({warmup} steps) "
                         f"is dropped because {why}; give --warmup_steps or --warmup_ratio to choose one.")
            warmup, sources["warmup"] = 0, f"{sources['warmup']} (dropped)"
    schedule = make_schedule(args.lr_scheduler_type, args.learning_rate, step_plan.total_steps, warmup,
                             **args.scheduler_kwargs())
    deepspeed = None
    if args.deepspeed:
        import importlib.util

        from tunewise.schedule.deepspeed import reconcile

        if importlib.util.find_spec("deepspeed") is None:
            raise UserError(f"--deepspeed {args.deepspeed}: DeepSpeed is not installed; install the optional extra "
                            "with: pip install 'tunewise[deepspeed]'.")
        bf16, fp16 = mixed_precision(args.torch_dtype)
        flags = {name: getattr(args, name) for name in (
            "learning_rate", "weight_decay", "per_device_train_batch_size", "gradient_accumulation_steps",
            "max_grad_norm", "torch_dtype", "lr_scheduler_type")}
        deepspeed = reconcile(args.deepspeed, {**flags, "bf16": bf16, "fp16": fp16}, step_plan.world_size,
                              step_plan.total_steps, warmup, keep_scheduler=args.deepspeed_scheduler == "keep")
        notes += [f"WARNING: {text}" for text in deepspeed.warnings]
        sources = {**sources, **deepspeed.sources}
        schedule = deepspeed.schedule_override or schedule
    from tunewise.train.retention import build_probes

    zero_stage = int(deepspeed.config.get("zero_optimization", {}).get("stage", 0)) if deepspeed else 0
    probes = build_probes(args, model_dir, zero_stage)
    return Prepared(args, sources, model_dir, tokenizer, train_rows, val_rows, step_plan, schedule, notes, deepspeed,
                    probes=probes, identity_rows=identity_rows)


def print_plan(prep: Prepared) -> None:
    from tunewise.advise import plan_advice
    from tunewise.schedule.plan import format_plan

    for note in prep.notes:
        print(note)
    print(format_plan(prep.step_plan, prep.schedule, prep.sources), flush=True)
    print(plan_advice(prep, prep.args.gpu_memory), flush=True)


def deepspeed_cpu_state(prep: Prepared) -> dict | None:
    """DeepSpeed without CUDA: TrainingArguments ignores ddp_backend for DeepSpeed, so accelerate builds its state with
    no backend and reports a world size of 1 (the Trainer then fills train_batch_size for one process and deepspeed
    rejects it). Build the state with gloo first and let TrainingArguments use it. A run without a launcher gets a
    one-process group (deepspeed would otherwise look for MPI)."""
    import torch

    if prep.deepspeed is None or torch.cuda.is_available():
        return None
    if "WORLD_SIZE" not in os.environ:
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR=prep.args.master_addr,
                          MASTER_PORT=str(prep.args.master_port))
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    from accelerate import PartialState

    PartialState(backend="gloo")
    return {"use_configured_state": True}


def training_arguments(prep: Prepared, staging: Path):
    import torch
    from transformers import TrainingArguments

    args = prep.args
    bf16, fp16 = mixed_precision(args.torch_dtype)
    return TrainingArguments(
        output_dir=str(staging),
        per_device_train_batch_size=args.per_device_train_batch_size,
        per_device_eval_batch_size=args.per_device_eval_batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        weight_decay=args.weight_decay,
        max_grad_norm=args.max_grad_norm,
        **prep.schedule.trainer_kwargs(),
        logging_steps=args.logging_steps,
        logging_first_step=True,
        eval_strategy="steps" if prep.val_rows else "no",
        eval_steps=args.eval_steps,
        save_strategy="steps",
        save_steps=args.save_steps,
        save_total_limit=None,  # rotation is ours: it runs after a checkpoint is published (rundir.rotate)
        seed=args.seed,
        data_seed=args.seed,
        bf16=bf16,
        fp16=fp16,
        deepspeed=prep.deepspeed.config if prep.deepspeed else None,
        accelerator_config=deepspeed_cpu_state(prep),
        activation_checkpointing=args.gradient_checkpointing,  # transformers 5's name for gradient_checkpointing
        activation_checkpointing_kwargs={"use_reentrant": False} if args.gradient_checkpointing else None,
        dataloader_num_workers=args.dataloader_num_workers,
        dataloader_pin_memory=torch.cuda.is_available(),  # pinning without a GPU only warns, once per epoch
        remove_unused_columns=False,
        include_num_input_tokens_seen="non_padding",
        ddp_backend="gloo" if not torch.cuda.is_available() and "LOCAL_RANK" in os.environ else None,
        report_to=[],  # TensorBoard is added as a callback writing to RUN_DIR/runs
        disable_tqdm=False,
    )


def resume_target(args) -> Path | None:
    from tunewise.train import rundir

    if not args.resume_from_checkpoint:
        return None
    if args.resume_from_checkpoint == "latest":
        return rundir.latest_checkpoint(args.output_dir)
    path = Path(args.resume_from_checkpoint)
    if not (path / "trainer_state.json").is_file():
        raise UserError(f"--resume_from_checkpoint {path}: not a checkpoint directory (no trainer_state.json).")
    return path


def create_run_dir(prep: Prepared, command: str) -> Path:
    """A new versioned run directory holding args.json and the plan files."""
    from tunewise.args import to_json
    from tunewise.files import write_json_atomic
    from tunewise.schedule.plan import write_plan_files
    from tunewise.train import rundir

    run_dir = rundir.new_run_dir(prep.args.output_dir, prep.args.add_version)
    write_json_atomic(run_dir / "args.json", to_json(prep.args, prep.sources, command))
    write_plan_files(run_dir, prep.step_plan, prep.schedule, {"notes": prep.notes})
    return run_dir


def open_run(prep: Prepared, command: str) -> tuple[Path, Path | None]:
    """(run directory, checkpoint to resume from or None): prints the plan unless a launching parent did, and
    either reuses the resumed run's directory (its log cut back to the checkpoint) or makes a new one."""
    from tunewise.train import launch, rundir

    if is_main_process() and not os.environ.get(launch.RUN_DIR_ENV):
        print_plan(prep)
    resume = resume_target(prep.args)
    if resume is not None:
        run_dir = resume.parent
        if is_main_process():
            rundir.truncate_log(run_dir / "logging.jsonl", rundir.step_of(resume))
    else:
        run_dir, _ = launch.shared_run_dir(lambda: create_run_dir(prep, command))
    if is_main_process():
        rundir.clear_staging(run_dir)
        print(f"run directory: {run_dir}", flush=True)
    return run_dir, resume


def run_callbacks(prep: Prepared, run_dir: Path) -> tuple[list, object, object]:
    """(callbacks for the trainer, the MetricsLog, the BestTracker): logging.jsonl with planned_lr, the progress
    bar, best/early stop, the retention watch, atomic checkpoint publishing, the schedule guard and TensorBoard."""
    from tunewise.train import callbacks

    args = prep.args
    metrics = callbacks.MetricsLog(run_dir / "logging.jsonl", prep.schedule)
    on_eval_loss = args.early_stop_on == "eval_loss"
    by_retention = not on_eval_loss and prep.probes is not None and prep.probes.has_identity
    best = callbacks.BestTracker(args.early_stop_patience if on_eval_loss else None, by_eval_loss=not by_retention)
    extra = [metrics, callbacks.ProgressBar(metrics), best]
    if prep.probes is not None:  # before publishing: the best it names is known when the checkpoint is rotated
        from tunewise.train.retention import RetentionWatch

        extra.append(RetentionWatch(prep.probes, prep.tokenizer, args.retention_eval_steps, args.retention_threshold,
                                    metrics, best, stop=not on_eval_loss,
                                    patience=args.early_stop_patience or DEFAULT_RETENTION_PATIENCE))
    extra += [callbacks.PublishCheckpoints(run_dir, args.save_total_limit, best),
              callbacks.ScheduleGuard(prep.schedule, args.schedule_guard, run_dir=run_dir)]
    if "tensorboard" in args.report_to and is_main_process():
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        extra.append(TensorBoardCallback(SummaryWriter(log_dir=str(run_dir / "runs"))))
    return extra, metrics, best


def run_training(trainer, run_dir: Path, resume: Path | None, best, lines=lambda: []) -> None:
    """Train (without transformers' own progress bar: ours shows loss, lr and tokens/s), then on the main process
    plot the run and print where its checkpoints are; `lines()` adds command-specific summary lines."""
    from transformers.trainer_callback import ProgressCallback

    from tunewise.train import plots, rundir
    from tunewise.train.callbacks import ProgressBar
    from tunewise.train.retention import RetentionWatch

    trainer.remove_callback(ProgressCallback)
    try:
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    finally:  # a run stopped by an error ends its progress bar's line, so the error starts on its own
        for callback in trainer.callback_handler.callbacks:
            if isinstance(callback, ProgressBar):
                callback.on_train_end(None, None, None)
    if not is_main_process():
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
    line += f" ({len(watch.history)} probes, {watch.seconds:.1f} s)"
    return [line] + ([watch.stopped] if watch.stopped else [])


def command_main(argv: list[str], args_class, command: str, prepare, train) -> int:
    """`tunewise sft|dpo`: --help, parse, then either launch torchrun (after planning once here) or train."""
    from tunewise.args import help_text, parse
    from tunewise.train import launch

    if "-h" in argv or "--help" in argv:
        print(help_text(args_class, command))
        return 0
    args, sources, _ = parse(args_class, argv)
    if launch.wants_launch(args):
        prep = prepare(args, sources)
        print_plan(prep)
        return launch.launch(args, argv, command, create_run_dir(prep, command))
    train(args, sources)
    return 0
