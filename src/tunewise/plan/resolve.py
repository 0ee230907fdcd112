"""One run, resolved once, for `tunewise sft`, `dpo`, `rlhf` and `plan`; it writes nothing and imports nothing of train/.

    parsed flags (cli.py) -> where the policy starts (dpo --adapters: that run's base model and system prompt)
    -> the model's recommended values and the default warm-up -> one new, re-validated args object (every problem
    at once) -> the recipe's adjustments (KTO's batch of 1 run as 2, said) -> FSDP reconciliation -> the device's
    choices -> tokenizer and encoded rows -> step plan, warm-up, LR schedule, DeepSpeed reconciliation and retention
    probes -> a frozen Run (tunewise.plan.run), with gradient checkpointing turned on where the memory estimate needs it

The recipe (tunewise.recipes) says how its rows are read and encoded and where its policy starts.
"""
from __future__ import annotations

import dataclasses
import random
from types import MappingProxyType
from typing import TYPE_CHECKING, Mapping

from tunewise import ranks
from tunewise.errors import UserError
from tunewise.plan.footprint import planned_memory, refuse_unfit
from tunewise.plan.memory import human
from tunewise.plan.run import Run, mixed_precision, zero_stage

if TYPE_CHECKING:
    from tunewise.models.checkpoint import Checkpoint
    from tunewise.plan.fsdp import FsdpPlan

DEFAULT_WARMUP_RATIO = 0.05


def resolve(recipe, args, sources: Mapping[str, str]) -> Run:
    """The Run of parsed flags; a UserError (exit 2) for anything it cannot honour."""
    from tunewise.models.load import builtin_meta, check_model_dir
    from tunewise.models.lora import check_target_modules

    if not args.dataset:
        raise UserError(recipe.dataset_hint)
    start, changes = recipe.start(args, sources)
    check_model_dir(start.base)  # a corrupt config or weight file fails here, not after the run directory exists
    sources = {**sources, **{name: source for name, (_, source) in changes.items()}}
    notes = []
    recommended = recommended_changes(sources, builtin_meta(start.base).get("recommended", {}).get(args.recipe(), {}))
    if recommended:
        notes.append(f"{value_of(args, changes, 'model')} recommends its own defaults: "
                     + ", ".join(f"{name}={value}" for name, value in recommended.items()))
    changes.update({name: (value, "model") for name, value in recommended.items()})
    sources.update({name: "model" for name in recommended})
    if value_of(args, changes, "warmup_ratio") is None and value_of(args, changes, "warmup_steps") is None:
        changes["warmup_ratio"] = (DEFAULT_WARMUP_RATIO, "default")
    args = revalidated(args, changes)
    adjusted, adjust_notes = recipe.adjust(args, sources, planned_world_size(args))
    if adjusted:
        args = revalidated(args, adjusted)
        sources.update({name: source for name, (_, source) in adjusted.items()})
        notes += adjust_notes
    if args.train_type == "lora" and not start.adapter:  # a new adapter: its target modules must exist
        check_target_modules(start.base, args.target_modules)
    args, sources, fsdp = plan_fsdp(recipe, args, sources, start, notes)
    args, sources, device = plan_device(args, sources, start, fsdp)
    if args.quant_bits is not None:
        device = plan_quantization(recipe, args, device)
    if start.adapter:
        notes.append(f"starting from {start.adapter} on {start.base}"
                     + (" (the adapter keeps training; its LoRA settings apply)" if args.train_type == "lora"
                        else " (merged, then trained in full)"))
    tokenizer = start.load_tokenizer()
    train_rows, val_rows, stats = load_and_encode(recipe, args, tokenizer, notes)
    notes += recipe.check(args, train_rows, tokenizer)
    samples = recipe.samples(args, train_rows, planned_world_size(args))
    step_plan, schedule, deepspeed, sources = plan_schedule(args, sources, samples, notes)
    sources = {**sources, "world_size": world_size_source(args, sources)}
    from tunewise.plan.probes import build_probes

    probes = build_probes(args, start.base, zero_stage(deepspeed))
    run = Run(recipe, args, MappingProxyType(sources), start, tokenizer, train_rows, val_rows, step_plan, schedule,
              deepspeed, fsdp, probes, stats.identity_rows, tuple(notes), device)
    run = checkpointing_to_fit(run)
    run = dataclasses.replace(run, memory=planned_memory(run))
    refuse_unfit(run)  # GRPO: a run that would not fit stops here
    return run


def plan_device(args, sources: dict, start: Checkpoint, fsdp: FsdpPlan | None):
    """(args, sources, DevicePlan): --torch_dtype auto and --use_liger_kernel (unset) resolved for this machine's
    device (source "device"), the attention and loss paths chosen, before any data is read."""
    from tunewise.plan.memory import ModelShape
    from tunewise.models.device import Device, choose

    sharded = fsdp is not None
    if args.deepspeed:
        from tunewise.plan.deepspeed import load_config

        sharded = sharded or int(load_config(args.deepspeed)[0].get("zero_optimization", {}).get("stage", 0)) == 3
    try:
        stored = ModelShape.from_config(start.base).dtype
    except UserError:  # a hub id: its config is read when it is downloaded
        stored = ""
    device = choose(args, Device.current(), stored, sharded)
    changes = {}
    if args.torch_dtype != device.dtype:
        changes["torch_dtype"] = (device.dtype, "device")
    if args.use_liger_kernel is None:
        changes["use_liger_kernel"] = (device.liger, "device")
    if changes:
        args = revalidated(args, changes)
        sources = {**sources, **{name: "device" for name in changes}}
    return args, sources, device


def plan_quantization(recipe, args, device):
    """QLoRA's checks that need more than the flags: a DeepSpeed JSON of ZeRO-3 is refused; whether bitsandbytes runs
    on this machine is said as a note (a plan may size a GPU run on a CPU; training refuses it, tunewise.training),
    and so is TRL's keeping a quantized model's adapter in bf16."""
    from tunewise.models.quantization import backend_problem

    if args.deepspeed:
        from tunewise.plan.deepspeed import load_config

        if int(load_config(args.deepspeed)[0].get("zero_optimization", {}).get("stage", 0)) == 3:
            raise UserError(f"--quant_bits {args.quant_bits} with --deepspeed {args.deepspeed}: its ZeRO stage 3 "
                            "shards the weights that bitsandbytes packs; use stage 2 or less (a quantized base is "
                            "held whole).")
    notes = []
    if recipe.trainer.startswith("trl.") and device.dtype != "bfloat16":
        notes.append(f"{recipe.trainer.split('.')[-1]} keeps the LoRA weights of a quantized model in bfloat16 (as the "
                     "QLoRA paper does), not float32: the adapter trains and is saved in bf16")
    problem = backend_problem(args.quant_bits, device.device.kind)
    if problem is not None:
        notes.append(f"--quant_bits {args.quant_bits} cannot train on this machine: {problem}; the plan is for one "
                     "where it can")
    return dataclasses.replace(device, notes=device.notes + tuple(notes))


def checkpointing_to_fit(run: Run) -> Run:
    """`run`, with gradient checkpointing turned on (source "memory", and said) when the plan's memory estimate does
    not fit the GPU (or --gpu_memory) without it and --gradient_checkpointing was not given."""
    capacity = run.args.gpu_memory or run.device.device.memory
    if not capacity or run.args.gradient_checkpointing or run.sources.get("gradient_checkpointing") != "default":
        return run
    without = planned_memory(run, capacity)
    if without is None or without.fits:
        return run
    args = revalidated(run.args, {"gradient_checkpointing": (True, "memory")})
    run = dataclasses.replace(run, args=args, sources=MappingProxyType({**run.sources,
                                                                       "gradient_checkpointing": "memory"}))
    with_it = planned_memory(run, capacity)
    note = (f"note: --gradient_checkpointing true: the memory estimate without it ({human(without.total)}) does not "
            f"fit {human(with_it.capacity)}; with it {human(with_it.total)}"
            + ("" if with_it.fits else ", which still does not fit (see the memory estimate)") + ".")
    return dataclasses.replace(run, notes=run.notes + (note,))


def value_of(args, changes: dict, name: str):
    return changes[name][0] if name in changes else getattr(args, name)


def recommended_changes(sources: Mapping[str, str], recommended: dict) -> dict:
    """The model's recommended values for flags left at their defaults (a recommended warm-up ratio yields to a
    given --warmup_steps)."""
    return {name: value for name, value in recommended.items()
            if sources.get(name) == "default" and not (name == "warmup_ratio" and sources.get("warmup_steps") != "default")}


def revalidated(args, changes: dict):
    """`args` with `changes` ({flag: (value, source)}) applied, validated again; a value the model recommended or
    a checkpoint's run set is named with where it came from when it fails."""
    try:
        return dataclasses.replace(args, **{name: value for name, (value, _) in changes.items()})
    except UserError as e:
        set_by = [f"{name}={value} ({'recommended by ' + args.model if source == 'model' else 'from ' + source})"
                  for name, (value, source) in changes.items() if source != "default"]
        raise UserError(f"{e} Values not given on the command line: {', '.join(set_by)}." if set_by else str(e)) from e


def planned_world_size(args) -> int:
    """The world size the run will have: torchrun's when running under it, else the one asked for."""
    return ranks.world_size() if ranks.under_launcher() else args.nproc_per_node * args.nnodes


def world_size_source(args, sources: Mapping[str, str]) -> str:
    """Where the plan's world size came from: torchrun's, or the flags (or ms-swift's NPROC_PER_NODE/NNODES)."""
    if ranks.under_launcher():
        return "torchrun"
    given = [sources.get(name, "default") for name in ("nproc_per_node", "nnodes") if getattr(args, name) > 1]
    return ", ".join(dict.fromkeys(source for source in given if source != "default")) or "default"


def plan_fsdp(recipe, args, sources: dict, start: Checkpoint, notes: list):
    """(args, sources, FsdpPlan or None): --fsdp reconciled with the flags and the model's layers, before any data is
    read; a config that turns activation checkpointing on sets --gradient_checkpointing (source fsdp_config)."""
    if not args.fsdp:
        return args, sources, None
    import torch

    from tunewise.models.adapter_config import lora_dropout as adapter_dropout
    from tunewise.models.load import module_layout
    from tunewise.plan.fsdp import ModelLayout, reconcile

    architecture, no_split, classes, dropouts = module_layout(start.base)
    if not recipe.dropout:
        dropouts = {}
    elif args.train_type == "lora":  # an adapter that keeps training keeps its own dropout
        lora_dropout = adapter_dropout(start.adapter) if start.adapter else args.lora_dropout
        dropouts = {**dropouts, **({"lora_dropout": lora_dropout} if lora_dropout else {})}
    fsdp = reconcile(args.fsdp, args.fsdp_config, world_size=planned_world_size(args),
                     layout=ModelLayout(architecture, no_split, classes, tuple(dropouts.items())),
                     cuda=torch.cuda.is_available(), gradient_checkpointing=args.gradient_checkpointing,
                     gradient_checkpointing_source=sources.get("gradient_checkpointing", "default"))
    if fsdp.gradient_checkpointing != args.gradient_checkpointing:
        args = revalidated(args, {"gradient_checkpointing": (fsdp.gradient_checkpointing, "fsdp_config")})
    if fsdp.model_checkpointing:
        notes.append("note: --gradient_checkpointing under FSDP is the model's own (it keeps dropout masks; "
                     "transformers warns that it costs one more all-gather per layer in the backward). "
                     '"activation_checkpointing": true in --fsdp_config uses FSDP\'s, without dropout only.')
    return args, {**sources, **fsdp.sources}, fsdp


def split_validation(items: list, ratio: float, seed: int) -> tuple[list, list]:
    """(validation, training): a seeded random `ratio` share held out for evaluation."""
    shuffled = items[:]
    random.Random(seed).shuffle(shuffled)
    n_val = max(1, round(len(shuffled) * ratio))
    if n_val >= len(shuffled):
        raise UserError(f"--split_dataset_ratio {ratio} leaves no training rows.")
    return shuffled[:n_val], shuffled[n_val:]


def load_and_encode(recipe, args, tokenizer, notes: list) -> tuple[list, list, object]:
    """(training rows, validation rows, the training rows' EncodeStats): --dataset, and --val_dataset or a
    --split_dataset_ratio share of it, read and encoded the recipe's way."""
    items = recipe.load(args.dataset, args.model_name, args.model_author, args.seed)
    val_items = recipe.load(args.val_dataset, args.model_name, args.model_author, args.seed)
    if not val_items and args.split_dataset_ratio > 0:
        val_items, items = split_validation(items, args.split_dataset_ratio, args.seed)
    train_rows, stats = recipe.encode(tokenizer, items, args.system, args.max_length, args.truncation_strategy)
    val_rows, _ = recipe.encode(tokenizer, val_items, args.system, args.max_length, args.truncation_strategy)
    unit = recipe.unit
    notes.append(f"train data: {stats.summary()}" + (f"; validation: {len(val_rows)} {unit}" if val_rows else ""))
    if args.dataset_num_proc > 1 or args.load_from_cache_file:
        notes.append("note: --dataset_num_proc and --load_from_cache_file (ms-swift's) change nothing here: the rows "
                     "were read and encoded in this process, with no cache")
    if not train_rows:
        raise UserError(f"No training {unit} are left after encoding (all longer than --max_length?).")
    if getattr(args, "packing", False):  # sft only; the plan then counts packs
        from tunewise.data.packing import pack_rows, summary

        packs = pack_rows(train_rows, args.max_length)
        notes.append(summary(len(train_rows), packs, args.max_length))
        train_rows = packs
    return train_rows, val_rows, stats


def plan_schedule(args, sources: dict, n_rows: int, notes: list):
    """(step plan, LR schedule, reconciled DeepSpeed config or None, sources with "warmup" and DeepSpeed's)."""
    from tunewise.plan.schedule import make_schedule, plan_steps, resolve_warmup

    step_plan = plan_steps(n_rows, args.per_device_train_batch_size, args.gradient_accumulation_steps,
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
    if not args.deepspeed:
        return step_plan, schedule, None, sources
    import importlib.util

    from tunewise.plan.deepspeed import reconcile

    if importlib.util.find_spec("deepspeed") is None:
        raise UserError(f"--deepspeed {args.deepspeed}: DeepSpeed is not installed; install the optional extra "
                        "with: pip install 'tunewise[deepspeed]'.")
    import torch

    bf16, fp16 = mixed_precision(args.torch_dtype)
    flags = {"cuda": torch.cuda.is_available()} | {name: getattr(args, name) for name in (
        "learning_rate", "weight_decay", "per_device_train_batch_size", "gradient_accumulation_steps",
        "max_grad_norm", "torch_dtype", "lr_scheduler_type")}
    deepspeed = reconcile(args.deepspeed, {**flags, "bf16": bf16, "fp16": fp16}, step_plan.world_size,
                          step_plan.total_steps, warmup, keep_scheduler=args.deepspeed_scheduler == "keep")
    notes += [f"WARNING: {text}" for text in deepspeed.warnings]
    return step_plan, deepspeed.schedule_override or schedule, deepspeed, {**sources, **deepspeed.sources}
