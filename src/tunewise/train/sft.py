"""`tunewise sft`: supervised fine-tuning with LoRA or all parameters, read top to bottom.

flags -> args -> data -> plan -> run dir -> model -> transformers.Trainer + callbacks -> checkpoints, plots.
`tunewise plan` runs the same steps up to the plan and stops.
"""
from __future__ import annotations

import sys
from pathlib import Path

from tunewise.args import SftArgs
from tunewise.errors import UserError
from tunewise.train.rundir import STAGING
from tunewise.train.session import (  # noqa: F401  (re-exported: the names sft's users know)
    Prepared,
    apply_model_defaults,
    command_main,
    load_and_encode,
    make_prepared,
    open_run,
    print_plan,
    run_callbacks,
    run_training,
    training_arguments,
)


def prepare(args: SftArgs, sources: dict) -> Prepared:
    from tunewise.data.encode import encode_dataset
    from tunewise.data.formats import load_conversations
    from tunewise.models.load import load_tokenizer, resolve_model

    if not args.dataset:
        raise UserError("--dataset is required: a .jsonl/.json file, PATH#N, or a built-in set such as self_cognition.")
    model_dir = resolve_model(args.model)
    notes = []
    apply_model_defaults(args, sources, model_dir, notes)
    tokenizer = load_tokenizer(model_dir)
    train_rows, val_rows, stats = load_and_encode(args, tokenizer, load_conversations, encode_dataset, notes)
    return make_prepared(args, sources, model_dir, tokenizer, train_rows, val_rows, notes, stats.identity_rows)


def build_model(prep: Prepared):
    from transformers import set_seed

    from tunewise.models.load import load_model
    from tunewise.models.lora import lora_config

    args = prep.args
    set_seed(args.seed)  # peft draws LoRA's A matrices here, before the Trainer seeds: unseeded, no run repeats
    model = load_model(prep.model_dir, args.torch_dtype, args.attn_impl)
    if args.train_type == "lora":
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(args))
    return model


def train(args: SftArgs, sources: dict) -> Path:
    from transformers import DataCollatorForSeq2Seq, Trainer

    prep = prepare(args, sources)
    run_dir, resume = open_run(prep, "sft")
    callbacks, _, best = run_callbacks(prep, run_dir)
    trainer = Trainer(
        model=build_model(prep),
        args=training_arguments(prep, run_dir / STAGING),
        train_dataset=prep.train_rows,
        eval_dataset=prep.val_rows or None,
        data_collator=DataCollatorForSeq2Seq(prep.tokenizer, padding=True, label_pad_token_id=-100),
        processing_class=prep.tokenizer,
        callbacks=callbacks,
    )
    run_training(trainer, run_dir, resume, best)
    return run_dir


def main(argv: list[str]) -> int:
    return command_main(argv, SftArgs, "sft", prepare, train)


def plan_main(argv: list[str]) -> int:
    """`tunewise plan`: the sft flags (or, with --rlhf_type dpo, the dpo ones); prepares, prints and writes the plan."""
    from tunewise.args import flag_groups, help_text, parse
    from tunewise.schedule.plan import write_plan_files

    args_class, prepare_fn = SftArgs, prepare
    kinds = [values for name, values in flag_groups(argv) if name == "rlhf_type"]
    if kinds:
        if kinds[-1] != ["dpo"]:
            raise UserError(f"--rlhf_type {' '.join(kinds[-1])}: tunewise plans 'dpo' runs (or sft runs without the "
                            "flag).")
        from tunewise.train import dpo

        args_class, prepare_fn = dpo.DpoArgs, dpo.prepare
    if "-h" in argv or "--help" in argv:
        print(help_text(args_class, "plan").replace("Supervised fine-tuning", "Plan a fine-tune without training"))
        return 0
    args, sources, _ = parse(args_class, argv, {"rlhf_type": None})
    prep = prepare_fn(args, sources)
    print_plan(prep)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_plan_files(out, prep.step_plan, prep.schedule, {"notes": prep.notes})
    print(f"wrote {out / 'plan.json'}, {out / 'lr_plan.csv'}, {out / 'lr_plan.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
