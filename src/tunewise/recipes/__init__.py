"""The training recipes: what each training command declares that differs from the others. A recipe names its
arguments, how its rows are read and encoded, where its policy starts (read by tunewise.plan.resolve), and the
trainer that runs it: the trainer and config classes, the config's own fields, the models, the batches and the
loss (read by tunewise.train.build, which makes the trainer's config and the trainer in one place for all).

Adding a recipe is one module here plus a line in RECIPES.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

RECIPES = {  # command -> the module whose RECIPE it is
    "sft": "tunewise.recipes.sft",
    "dpo": "tunewise.recipes.dpo",
    "grpo": "tunewise.recipes.grpo",
    "kto": "tunewise.recipes.kto",
    "orpo": "tunewise.recipes.orpo",
    "simpo": "tunewise.recipes.simpo",
    "cpo": "tunewise.recipes.cpo",
    "rm": "tunewise.recipes.rm",
}


def recipe(command: str) -> Recipe:
    return importlib.import_module(RECIPES[command]).RECIPE


def no_fields(args) -> dict:
    return {}


def no_batches(run, model) -> dict:
    return {}


def no_summary(metrics) -> list[str]:
    return []


def rows_counted(args, rows: list, world_size: int) -> int:
    return len(rows)


def as_given(args, sources: dict, world_size: int) -> tuple[dict, list[str]]:
    return {}, []


def no_check(args, rows: list, tokenizer) -> list[str]:
    return []


def rows_as_list(rows: list):
    return rows


def trl_trainer(name: str, module: str = "trl") -> dict:
    """The Recipe fields of one of TRL's trainers: `name`Trainer and `name`Config, the rows as a datasets.Dataset, and
    none of the identity-SFT advice on epochs and learning rate."""
    return {"trainer": f"{module}.{name}Trainer", "config": f"{module}.{name}Config", "dataset": rows_as_table,
            "sft_rules": False}


def rows_as_table(rows: list):
    """A datasets.Dataset of the rows, as TRL's trainers take them."""
    from datasets import Dataset

    return Dataset.from_list(rows)


@dataclass(frozen=True)
class Recipe:
    """What a training command adds to the shared machinery."""

    command: str  # "sft" | "dpo" | "rlhf": args.json's command
    args_class: type
    dataset_hint: str  # the error when --dataset is missing
    # the plan (tunewise.plan.resolve)
    load: Callable  # (specs, names, authors, seed) -> items (conversations, preference pairs, prompts)
    encode: Callable  # (tokenizer, items, system, max_length, truncation) -> (rows, stats with summary())
    start: Callable  # (args, sources) -> (Checkpoint, {flag: (value, source)}): the policy's start, flags it sets
    # the trainer (tunewise.train.build)
    models: Callable  # (run) -> the trainer's model arguments: {"model": ...} (+ "ref_model", "peft_config", or
    #                   GRPO's "reward_funcs")
    trainer: str = "transformers.Trainer"  # module.Class, imported when a run builds it
    config: str = "transformers.TrainingArguments"  # its config class (TrainingArguments or a subclass)
    config_fields: Callable = no_fields  # (args) -> the config class's own fields, beside the shared ones
    batches: Callable = no_batches  # (run, model) -> data_collator / compute_loss_func for the trainer
    dataset: Callable = rows_as_list  # (rows) -> the dataset the trainer takes
    summary: Callable = no_summary  # (MetricsLog) -> the command's own end-of-run lines
    # the plan, where a recipe's rows are not its samples
    samples: Callable = rows_counted  # (args, rows, world size) -> the samples an epoch trains (the plan's steps)
    check: Callable = no_check  # (args, rows, tokenizer) -> the plan's notes; a UserError for rows it cannot train
    adjust: Callable = as_given  # (args, sources, world size) -> ({flag: (value, source)}, notes): values its trainer
    #                              cannot take as given, replaced by ones that train the same (KTO's batch of 1)
    pairs: bool = False  # rows are preference pairs (a chosen and a rejected sequence each)
    score_head: bool = False  # the model is a sequence classifier with one output (rm), not a causal LM
    sft_rules: bool = True  # the advice's epoch and learning-rate rules (measured on identity SFT) apply
    dropout: bool = True  # the trainer keeps the model's dropout active (DPOConfig(disable_dropout=True) does not)
    rlhf_type: str | None = None  # `tunewise rlhf --rlhf_type X`'s X (args.json keeps it beside the command)

    @property
    def unit(self) -> str:
        return "pairs" if self.pairs else "rows"
