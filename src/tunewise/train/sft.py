"""`tunewise sft`: supervised fine-tuning with LoRA or all parameters: the SFT recipe, read top to bottom.

flags -> Run (tunewise.train.recipe: data, plan) -> run dir -> model -> transformers.Trainer + callbacks
(tunewise.train.session) -> checkpoints, plots. `tunewise plan` resolves the same Run and stops there.
"""
from __future__ import annotations

from pathlib import Path

from tunewise.args import SftArgs
from tunewise.data.encode import encode_dataset
from tunewise.data.formats import load_conversations
from tunewise.train.recipe import Recipe, Run
from tunewise.train.session import training_arguments


def start_from_base(args: SftArgs, sources: dict):
    """The base model itself; sft sets no flags of its own."""
    from tunewise.checkpoint import resolve

    return resolve(args.model, [], template=args.template), {}


def build_model(run: Run):
    from transformers import set_seed

    from tunewise.models.load import load_model
    from tunewise.models.lora import lora_config

    args = run.args
    set_seed(args.seed)  # peft draws LoRA's A matrices here, before the Trainer seeds: unseeded, no run repeats
    model = load_model(run.model_dir, args.torch_dtype, args.attn_impl)
    if args.train_type == "lora":
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(args))
    return model


def build_trainer(run: Run, staging: Path, callbacks: list):
    from transformers import DataCollatorForSeq2Seq, Trainer

    from tunewise.train.fsdp import check_active

    trainer = Trainer(
        model=build_model(run),
        args=training_arguments(run, staging),
        train_dataset=run.train_rows,
        eval_dataset=run.val_rows or None,
        data_collator=DataCollatorForSeq2Seq(run.tokenizer, padding=True, label_pad_token_id=-100),
        processing_class=run.tokenizer,
        callbacks=callbacks,
    )
    check_active(trainer, run)
    return trainer


SFT = Recipe(
    command="sft",
    args_class=SftArgs,
    dataset_hint="--dataset is required: a .jsonl/.json/.csv/.parquet file, a dataset folder, a Hub id (owner/name), "
                 "SPEC#N, or a built-in set such as self_cognition.",
    load=load_conversations,
    encode=encode_dataset,
    start=start_from_base,
    build_trainer=build_trainer,
)
