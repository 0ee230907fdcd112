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


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


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
                           world_size(), args.num_train_epochs, args.max_steps)
    warmup = resolve_warmup(step_plan.total_steps, args.warmup_ratio, args.warmup_steps)
    schedule = make_schedule(args.lr_scheduler_type, args.learning_rate, step_plan.total_steps, warmup,
                             **args.scheduler_kwargs())
    return Prepared(args, sources, model_dir, tokenizer, train_rows, val_rows, step_plan, schedule, notes)


def print_plan(prep: Prepared) -> None:
    from tunewise.schedule.plan import format_plan

    for note in prep.notes:
        print(note)
    print(format_plan(prep.step_plan, prep.schedule, prep.sources), flush=True)


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


def training_arguments(prep: Prepared, staging: Path):
    import torch
    from transformers import TrainingArguments

    args = prep.args
    dtype = args.torch_dtype
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
        bf16=dtype == "bfloat16" and torch.cuda.is_available(),
        fp16=dtype == "float16" and torch.cuda.is_available(),
        gradient_checkpointing=args.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if args.gradient_checkpointing else None,
        dataloader_num_workers=args.dataloader_num_workers,
        remove_unused_columns=False,
        include_num_input_tokens_seen="non_padding",
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


def train(args: SftArgs, sources: dict) -> Path:
    from transformers import DataCollatorForSeq2Seq, Trainer
    from transformers.trainer_callback import ProgressCallback

    from tunewise.schedule.plan import write_plan_files
    from tunewise.train import callbacks, plots, rundir

    prep = prepare(args, sources)
    if is_main_process():
        print_plan(prep)
    resume = resume_target(args)
    if resume is not None:
        run_dir = resume.parent
        rundir.truncate_log(run_dir / "logging.jsonl", rundir.step_of(resume))
    else:
        run_dir = rundir.new_run_dir(args.output_dir, args.add_version)
        rundir.write_json_atomic(run_dir / "args.json", to_json(args, prep.sources, "sft"))
        write_plan_files(run_dir, prep.step_plan, prep.schedule, {"notes": prep.notes})
    rundir.clear_staging(run_dir)
    print(f"run directory: {run_dir}", flush=True)

    model = build_model(prep)
    metrics = callbacks.MetricsLog(run_dir / "logging.jsonl", prep.schedule)
    best = callbacks.BestTracker(args.early_stop_patience)
    extra = [metrics, callbacks.ProgressBar(metrics), best,
             callbacks.PublishCheckpoints(run_dir, args.save_total_limit, best),
             callbacks.ScheduleGuard(prep.schedule, args.schedule_guard)]
    if "tensorboard" in args.report_to:
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
    rundir.clear_staging(run_dir)
    if is_main_process():
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
