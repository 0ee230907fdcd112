"""The memory a resolved run plans for on its device: the estimate (tunewise.plan.memory) of its model, its
batches, its loss path and its sharding (DeepSpeed's ZeRO stage and offload, or FSDP's equivalent)."""
from __future__ import annotations

from tunewise.errors import UserError
from tunewise.plan.memory import DTYPE_BYTES, MemoryEstimate, ModelShape, estimate_memory
from tunewise.plan.run import mixed_precision


def sharding(run) -> dict:
    """The sharding the memory estimate assumes: DeepSpeed's ZeRO stage and offload, or FSDP's equivalent (full shard:
    weights, gradients and optimizer state sharded, as ZeRO-3; shard_grad_op: as ZeRO-2; offload: all three on CPU;
    under mixed precision FSDP upcasts the trainable weights to float32)."""
    if run.fsdp is not None:
        offload = run.fsdp.config["cpu_offload"]
        mixed = any(mixed_precision(run.args.torch_dtype))
        return {"zero_stage": 3 if run.fsdp.config["reshard_after_forward"] else 2, "offload_optimizer": offload,
                "offload_params": offload, "master_weights": mixed}
    if run.deepspeed is None:
        return {}
    zero = run.deepspeed.config.get("zero_optimization", {}) if isinstance(run.deepspeed.config, dict) else {}
    off = lambda key: str(zero.get(key, {}).get("device", "none")) in ("cpu", "nvme")
    return {"zero_stage": int(zero.get("stage", 0)), "offload_optimizer": off("offload_optimizer"),
            "offload_params": off("offload_param"), "master_weights": True}


def trained_share(rows: list, sample: int = 1000) -> float:
    """The share of tokens whose next token is trained, over the first `sample` rows (1.0 for preference pairs)."""
    rows = rows[:sample]
    if not rows or "labels" not in rows[0]:
        return 1.0
    total = sum(len(r["labels"]) for r in rows)
    return sum(1 for r in rows for label in r["labels"] if label != -100) / max(total, 1)


def planned_memory(run, gpu_memory=None) -> MemoryEstimate | None:
    """The memory estimate of a resolved run on its device (a GPU's own memory as capacity unless --gpu_memory
    names one), or None when the model's config cannot tell its shape."""
    args = run.args
    try:
        shape = ModelShape.from_config(run.model_dir)
    except UserError:
        return None
    gpu_memory = gpu_memory or args.gpu_memory or run.device.device.memory
    dtype = args.torch_dtype if args.torch_dtype in DTYPE_BYTES else shape.dtype  # resolved for the device
    dtype = dtype if dtype in DTYPE_BYTES else "float32"
    pairs = run.recipe.pairs  # dpo: rows are preference pairs, each a chosen and a rejected sequence
    # dpo: TRL pads pairs to --max_length at most and runs chosen and rejected as one batch of two per pair
    batch = args.per_device_train_batch_size
    if pairs or "input_ids" not in run.train_rows[0]:  # GRPO's prompts: TRL tokenizes and completes them itself
        seq = args.max_length
    elif args.padding_free:  # the largest batch holds the longest rows, without padding
        lengths = sorted(len(r["input_ids"]) for r in run.train_rows)
        seq = -(-sum(lengths[-batch:]) // min(batch, len(lengths)))
    else:  # padded: every row of a batch as long as the longest
        seq = max(len(r["input_ids"]) for r in run.train_rows)
    device = "cuda" if run.device.device.cuda or gpu_memory is not None else "cpu"
    return estimate_memory(
        shape, args.train_type, weight_dtype=dtype, batch_size=batch * (2 if pairs else 1), seq_len=seq,
        lora_rank=args.lora_rank, lora_targets=args.target_modules, lora_dropout=args.lora_dropout,
        gradient_checkpointing=args.gradient_checkpointing, world_size=run.step_plan.world_size,
        capacity=gpu_memory, device=device, padding_free=not pairs and args.padding_free,
        loss="model" if pairs else run.device.loss, trained_share=trained_share(run.train_rows),
        quant_bits=args.quant_bits, double_quant=args.bnb_4bit_use_double_quant, **sharding(run))

