"""The memory a resolved run plans for on its device: the estimate (tunewise.plan.memory) of its model, its
batches, its loss path and its sharding (DeepSpeed's ZeRO stage and offload, or FSDP's equivalent)."""
from __future__ import annotations

from tunewise.args.grpo import GrpoFlags
from tunewise.errors import UserError
from tunewise.plan.grpo_memory import (GrpoMemory, GrpoSettings, estimate_grpo_memory, format_grpo_memory,
                                       layer_work_per_token)
from tunewise.plan.memory import DTYPE_BYTES, MemoryEstimate, ModelShape, estimate_memory, human
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
    if isinstance(args, GrpoFlags):
        return grpo_memory(run, shape, dtype, gpu_memory)
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
        quant_bits=args.quant_bits, double_quant=args.bnb_4bit_use_double_quant, score_head=run.recipe.score_head,
        **sharding(run))



# ---------------------------------------------------------------------------------------------------------------
# GRPO: generation included (tunewise.plan.grpo_memory), refused before it starts where it would not fit
_LONGEST: list = [None, None, 0]  # the last (rows, tokenizer, length): a plan asks again while it resolves


def longest_prompt(tokenizer, rows: list, chunk: int = 1000) -> int:
    """Tokens of the longest prompt as TRL renders it (chat template, generation prompt): a generation batch is
    left-padded to its longest prompt."""
    if _LONGEST[0] is rows and _LONGEST[1] is tokenizer:
        return _LONGEST[2]
    longest = 0
    for start in range(0, len(rows), chunk):
        prompts = [r["prompt"] for r in rows[start:start + chunk]]
        ids = tokenizer.apply_chat_template(prompts, add_generation_prompt=True, tokenize=True, return_dict=True)
        longest = max([longest, *(len(x) for x in ids["input_ids"])])
    _LONGEST[:] = [rows, tokenizer, longest]
    return longest


def available_memory(processes: int = 1) -> int:
    """A CPU run's capacity per process: the memory the machine has available now, shared by the `processes` this
    node runs, plus what this process already holds (the estimate counts the whole process)."""
    import psutil

    return psutil.virtual_memory().available // processes + psutil.Process().memory_info().rss


def reward_model_memory(paths, dtype: str) -> tuple[int, int, tuple[str, ...]]:
    """(weights, scoring bytes per token, the ones not estimated) of the --reward_model models in `dtype`: each a
    sequence classifier (its adapter merged) that scores a generation round under inference mode, one layer at a time
    (its q, k, v, attention output and three MLP-wide vectors per token, as generation's prefill); the largest of them
    per token. A base whose config.json is not at hand (a hub id) is not estimated, and named."""
    from tunewise.rewards.models import reward_checkpoints

    weights, per_token, unknown = 0, 0, []
    for path, checkpoint in zip(paths, reward_checkpoints(paths)):
        try:
            rm = ModelShape.from_config(checkpoint.base)
        except UserError:
            unknown.append(str(path))
            continue
        weights += estimate_memory(rm, "inference", weight_dtype=dtype, seq_len=1, score_head=True).parts["weights"]
        per_token = max(per_token, layer_work_per_token(rm, DTYPE_BYTES[dtype]))
    return weights, per_token, tuple(unknown)


def grpo_settings(run, dtype: str, device: str) -> GrpoSettings:
    args = run.args
    shards = sharding(run)
    prompt_length = longest_prompt(run.tokenizer, run.train_rows)
    rm_weights, rm_per_token, rm_unknown = reward_model_memory(args.reward_model, dtype)
    return GrpoSettings(
        train_type=args.train_type, weight_dtype=dtype, generation_batch=args.generation_batch(),
        batch_size=args.per_device_train_batch_size, prompt_length=prompt_length,
        completion_length=args.max_completion_length, beta=args.beta,
        gradient_checkpointing=args.gradient_checkpointing, lora_rank=args.lora_rank,
        lora_targets=tuple(args.target_modules), lora_dropout=args.lora_dropout, use_vllm=args.use_vllm,
        vllm_mode=args.vllm_mode, vllm_gpu_memory_utilization=args.vllm_gpu_memory_utilization,
        world_size=run.step_plan.world_size, device=device, reward_model_bytes=rm_weights,
        reward_scoring_per_token=rm_per_token, reward_models_not_estimated=rm_unknown, **shards)


def grpo_memory(run, shape: ModelShape, dtype: str, gpu_memory) -> GrpoMemory:
    """The GRPO estimate of a resolved run: on a GPU (or planned for one with --gpu_memory) against its memory, on a
    CPU against the machine's available memory."""
    device = "cuda" if run.device.device.cuda or gpu_memory is not None else "cpu"
    capacity = gpu_memory if device == "cuda" else available_memory(run.args.nproc_per_node)
    return estimate_grpo_memory(shape, grpo_settings(run, dtype, device), capacity)


def refuse_unfit(run) -> None:
    """A GRPO run whose estimate does not fit its device stops here, before anything is written, with the block of
    its estimate and the changes that would shrink it; so does a colocated vLLM share too small for its weights."""
    from tunewise.plan.grpo_memory import alternatives, vllm_problem

    from tunewise import ranks

    est = run.memory
    # on a CPU, torchrun's processes do not check again: the launching parent did, and the memory available to a
    # process that resolves late is lowered by the ranks that already started
    if not isinstance(est, GrpoMemory) or (est.settings.device == "cpu" and ranks.under_launcher()):
        return
    problem = vllm_problem(ModelShape.from_config(run.model_dir), est.settings, est.capacity)
    if problem:
        raise UserError(problem)
    if est.fits is not False:
        return
    where = ("the GPU" + (" (--gpu_memory)" if run.args.gpu_memory else "") if est.settings.device == "cuda"
             else "this machine's available memory")
    options = alternatives(ModelShape.from_config(run.model_dir), est.settings, est.capacity)
    raise UserError(f"this GRPO run would run out of memory: its estimate at the {est.peak_phase} peak is "
                    f"{human(est.total)}, {where} holds {human(est.capacity)}.\n{format_grpo_memory(est)}\n"
                    "What would shrink it (the estimate each change gives):\n"
                    + "\n".join(f"  {line}" for line in options)
                    + "\n(--num_generations changes nothing here: --per_device_train_batch_size counts completions, "
                    "so fewer generations per prompt means more prompts per round, not fewer completions.)")
