"""`tunewise sft`: supervised fine-tuning with LoRA or all parameters, read top to bottom.

flags -> args -> data -> plan -> run dir -> model -> transformers.Trainer + callbacks -> checkpoints, plots.
`tunewise plan` runs the same steps up to the plan and stops.
"""
from __future__ import annotations

import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path

from tunewise.args import SftArgs, apply_recommended, to_json
from tunewise.errors import UserError

DEFAULT_WARMUP_RATIO = 0.05


@dataclass
class Prepared:
    """Everything decided before a model is loaded: resolved args, tokenizer, encoded data and the plan."""

    args: SftArgs
    sources: dict
    model_dir: str
    tokenizer: object
    train_rows: list
    val_rows: list
    step_plan: object
    schedule: object
    notes: list
    deepspeed: object = None  # tunewise.schedule.deepspeed.Reconciled when --deepspeed is given


def planned_world_size(args: SftArgs) -> int:
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


def prepare(args: SftArgs, sources: dict) -> Prepared:
    from tunewise.data.encode import encode_dataset
    from tunewise.data.formats import load_conversations
    from tunewise.models.load import builtin_meta, load_tokenizer, resolve_model
    from tunewise.schedule.plan import make_schedule, plan_steps, resolve_warmup

    if not args.dataset:
        raise UserError("--dataset is required: a .jsonl/.json file, PATH#N, or a built-in set such as self_cognition.")
    model_dir = resolve_model(args.model)
    notes = []
    recommended = builtin_meta(model_dir).get("recommended", {}).get(args.train_type, {})
    changed = apply_recommended(args, sources, recommended)
    if changed:
        notes.append(f"{args.model} recommends its own defaults: "
                     + ", ".join(f"{name}={getattr(args, name)}" for name in changed))
    if args.warmup_ratio is None and args.warmup_steps is None:
        args.warmup_ratio = DEFAULT_WARMUP_RATIO

    tokenizer = load_tokenizer(model_dir)
    convs = load_conversations(args.dataset, args.model_name, args.model_author, args.seed)
    val_convs = load_conversations(args.val_dataset, args.model_name, args.model_author, args.seed)
    if not val_convs and args.split_dataset_ratio > 0:
        shuffled = convs[:]
        random.Random(args.seed).shuffle(shuffled)
        n_val = max(1, round(len(shuffled) * args.split_dataset_ratio))
        if n_val >= len(shuffled):
            raise UserError(f"--split_dataset_ratio {args.split_dataset_ratio} leaves no training rows.")
        val_convs, convs = shuffled[:n_val], shuffled[n_val:]
    train_rows, stats = encode_dataset(tokenizer, convs, args.system, args.max_length, args.truncation_strategy)
    val_rows, _ = encode_dataset(tokenizer, val_convs, args.system, args.max_length, args.truncation_strategy)
    notes.append(f"train data: {stats.summary()}" + (f"; validation: {len(val_rows)} rows" if val_rows else ""))
    if not train_rows:
        raise UserError("No training rows are left after encoding (all longer than --max_length?).")

    step_plan = plan_steps(len(train_rows), args.per_device_train_batch_size, args.gradient_accumulation_steps,
                           planned_world_size(args), args.num_train_epochs, args.max_steps)
    warmup = resolve_warmup(step_plan.total_steps, args.warmup_ratio, args.warmup_steps)
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
    return Prepared(args, sources, model_dir, tokenizer, train_rows, val_rows, step_plan, schedule, notes, deepspeed)


def print_plan(prep: Prepared) -> None:
    from tunewise.schedule.plan import format_plan

    for note in prep.notes:
        print(note)
    print(format_plan(prep.step_plan, prep.schedule, prep.sources), flush=True)
    from tunewise.advise import plan_advice

    print(plan_advice(prep, prep.args.gpu_memory), flush=True)


def build_model(prep: Prepared):
    from tunewise.models.load import load_model

    args = prep.args
    model = load_model(prep.model_dir, args.torch_dtype, args.attn_impl)
    if args.train_type == "lora":
        from peft import LoraConfig, get_peft_model

        targets = "all-linear" if args.target_modules == ["all-linear"] else args.target_modules
        config = LoraConfig(r=args.lora_rank, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                            target_modules=targets, task_type="CAUSAL_LM")
        model = get_peft_model(model, config)
    return model


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
        gradient_checkpointing=args.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if args.gradient_checkpointing else None,
        dataloader_num_workers=args.dataloader_num_workers,
        remove_unused_columns=False,
        include_num_input_tokens_seen="non_padding",
        ddp_backend="gloo" if not torch.cuda.is_available() and "LOCAL_RANK" in os.environ else None,
        report_to=[],  # TensorBoard is added as a callback writing to RUN_DIR/runs
        disable_tqdm=False,
    )


def resume_target(args: SftArgs) -> Path | None:
    from tunewise.train import rundir

    if not args.resume_from_checkpoint:
        return None
    if args.resume_from_checkpoint == "latest":
        return rundir.latest_checkpoint(args.output_dir)
    path = Path(args.resume_from_checkpoint)
    if not (path / "trainer_state.json").is_file():
        raise UserError(f"--resume_from_checkpoint {path}: not a checkpoint directory (no trainer_state.json).")
    return path


def create_run_dir(prep: Prepared) -> Path:
    """A new versioned run directory holding args.json and the plan files."""
    from tunewise.schedule.plan import write_plan_files
    from tunewise.train import rundir

    run_dir = rundir.new_run_dir(prep.args.output_dir, prep.args.add_version)
    rundir.write_json_atomic(run_dir / "args.json", to_json(prep.args, prep.sources, "sft"))
    write_plan_files(run_dir, prep.step_plan, prep.schedule, {"notes": prep.notes})
    return run_dir


def train(args: SftArgs, sources: dict) -> Path:
    from transformers import DataCollatorForSeq2Seq, Trainer
    from transformers.trainer_callback import ProgressCallback

    from tunewise.train import callbacks, launch, plots, rundir

    prep = prepare(args, sources)
    launched = bool(os.environ.get(launch.RUN_DIR_ENV))  # the launching parent printed the plan already
    if is_main_process() and not launched:
        print_plan(prep)
    resume = resume_target(args)
    if resume is not None:
        run_dir = resume.parent
        if is_main_process():
            rundir.truncate_log(run_dir / "logging.jsonl", rundir.step_of(resume))
    else:
        run_dir, _ = launch.shared_run_dir(lambda: create_run_dir(prep))
    if is_main_process():
        rundir.clear_staging(run_dir)
        print(f"run directory: {run_dir}", flush=True)

    model = build_model(prep)
    metrics = callbacks.MetricsLog(run_dir / "logging.jsonl", prep.schedule)
    best = callbacks.BestTracker(args.early_stop_patience)
    extra = [metrics, callbacks.ProgressBar(metrics), best,
             callbacks.PublishCheckpoints(run_dir, args.save_total_limit, best),
             callbacks.ScheduleGuard(prep.schedule, args.schedule_guard)]
    if "tensorboard" in args.report_to and is_main_process():
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        extra.append(TensorBoardCallback(SummaryWriter(log_dir=str(run_dir / "runs"))))
    trainer = Trainer(
        model=model,
        args=training_arguments(prep, run_dir / rundir.STAGING),
        train_dataset=prep.train_rows,
        eval_dataset=prep.val_rows or None,
        data_collator=DataCollatorForSeq2Seq(prep.tokenizer, padding=True, label_pad_token_id=-100),
        processing_class=prep.tokenizer,
        callbacks=extra,
    )
    trainer.remove_callback(ProgressCallback)
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    if is_main_process():
        rundir.clear_staging(run_dir)
        plots.plot_run(run_dir)
        best_cp, last_cp = (run_dir / "best").resolve(), (run_dir / "last").resolve()
        if best.stopped_early:
            print(f"early stop: no lower eval loss in {args.early_stop_patience} evaluations.")
        print(f"last checkpoint: {last_cp}")
        if best.best_step is not None:
            print(f"best checkpoint: {best_cp} (eval_loss {best.best_loss:.4f})")
        print(f"try it: tunewise infer --adapters {last_cp}", flush=True)
    return run_dir


def main(argv: list[str]) -> int:
    from tunewise.args import help_text, parse

    if "-h" in argv or "--help" in argv:
        print(help_text(SftArgs, "sft"))
        return 0
    args, sources, _ = parse(SftArgs, argv)
    from tunewise.train import launch

    if launch.wants_launch(args):
        prep = prepare(args, sources)
        print_plan(prep)
        return launch.launch(args, argv, "sft", create_run_dir(prep))
    train(args, sources)
    return 0


def plan_main(argv: list[str]) -> int:
    from tunewise.args import help_text, parse
    from tunewise.schedule.plan import write_plan_files

    if "-h" in argv or "--help" in argv:
        print(help_text(SftArgs, "plan").replace("Supervised fine-tuning", "Plan a fine-tune without training"))
        return 0
    args, sources, _ = parse(SftArgs, argv)
    prep = prepare(args, sources)
    print_plan(prep)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_plan_files(out, prep.step_plan, prep.schedule, {"notes": prep.notes})
    print(f"wrote {out / 'plan.json'}, {out / 'lr_plan.csv'}, {out / 'lr_plan.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
