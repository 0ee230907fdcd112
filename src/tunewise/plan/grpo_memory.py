"""GRPO's memory per device, generation included: what TRL 1.16's GRPOTrainer holds while it generates and while it
trains, from a model's config.json and the run's GRPO settings.

A GRPO step has two peaks that never overlap. Generation: the policy (no gradients: they are freed after each
optimizer step) and the optimizer's states, plus the KV cache of every completion of a generation round
(per_device_train_batch_size x steps_per_generation of them, prompt + max_completion_length tokens each) and the
sampling logits. The loss: the policy with its gradients and optimizer states, the activations of one batch of
per_device_train_batch_size completions over prompt + completion tokens, and TRL's fused output layer, which scores
the completion tokens in tiles of at most 4,096 tokens x 32,768 vocabulary entries instead of whole logits. Both
peaks hold the reference model when it is a separate copy (full training with --beta > 0; with LoRA TRL disables the
adapter instead, and with --beta 0 it loads none) and, with --use_vllm true --vllm_mode colocate, vLLM's share of
the GPU (--vllm_gpu_memory_utilization of it), which holds vLLM's own copy of the weights and the generation KV
cache instead of the policy's.

The CPU figures of the fused output layer (TRL's torch fallback without Triton, which scores every position, not
only the completions) were measured with `benchmarks/grpo_memory.py --fused_head`: 4 float32 tile-sized temporaries
in the forward pass, 9.5 in the backward pass (torch 2.13, TRL 1.16, 2026-12-05); benchmarks/GRPO_MEMORY.md holds
the whole estimate against measured peaks.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from tunewise.plan.memory import (CPU_PROCESS_BYTES, DTYPE_BYTES, GiB, MemoryEstimate, ModelShape, estimate_memory,
                                  human, parse_size)

TILE_TOKENS, TILE_VOCAB = 4096, 32768  # trl.kernels.chunked_logprob.TOKEN_CHUNK_SIZE, trl's _CHUNKED_LOGPROB_CHUNK_SIZE
CPU_TILE_COPIES_BACKWARD = 9.5  # float32 tile-sized tensors the torch fallback holds at once in its backward pass
DECODE_LOGITS_COPIES = 4  # the last position's float32 logits, the temperature-scaled scores, their softmax, a copy


@dataclass(frozen=True)
class GrpoSettings:
    """What decides a GRPO run's memory besides the model's shape."""

    train_type: str  # "lora" | "full"
    weight_dtype: str
    generation_batch: int  # completions generated at once on one device: per-device batch x steps per generation
    batch_size: int  # completions in one forward/backward pass of the loss (--per_device_train_batch_size)
    prompt_length: int  # tokens of the longest prompt, chat template included (a batch is padded to it)
    completion_length: int  # --max_completion_length
    beta: float = 0.04
    gradient_checkpointing: bool = False
    lora_rank: int = 8
    lora_targets: tuple = ("all-linear",)
    lora_dropout: float = 0.05
    use_vllm: bool = False
    vllm_mode: str = "colocate"
    vllm_gpu_memory_utilization: float = 0.3
    zero_stage: int = 0
    offload_optimizer: bool = False
    offload_params: bool = False
    master_weights: bool = False
    world_size: int = 1
    device: str = "cuda"  # "cuda" | "cpu": on CPU TRL's output layer runs its torch fallback over every position
    reward_model_bytes: int = 0  # --reward_model: their weights, held throughout
    reward_scoring_per_token: int = 0  # and the largest one-layer working set per token of scoring a round
    reward_models_not_estimated: tuple = ()  # --reward_model paths whose base config is not at hand

    @property
    def sequence(self) -> int:
        return self.prompt_length + self.completion_length

    @property
    def separate_reference(self) -> bool:
        """TRL loads a second copy of the model as the reference only for full training with a KL term."""
        return self.beta > 0 and self.train_type == "full"

    @property
    def colocated_vllm(self) -> bool:
        return self.use_vllm and self.vllm_mode == "colocate"


@dataclass
class GrpoMemory(MemoryEstimate):
    """A MemoryEstimate whose `parts` live through the whole step and whose `phases` (generation, loss) live one at a
    time: the peak is the parts plus the larger phase."""

    phases: dict[str, dict[str, int]] = field(default_factory=dict)
    settings: GrpoSettings | None = None

    @property
    def peak_phase(self) -> str | None:
        return max(self.phases, key=lambda name: sum(self.phases[name].values()), default=None)

    @property
    def total(self) -> int:
        return sum(self.parts.values()) + (sum(self.phases[self.peak_phase].values()) if self.phases else 0)

    def as_dict(self) -> dict:
        return {**super().as_dict(), "phases": self.phases, "peak_phase": self.peak_phase,
                "settings": dataclasses.asdict(self.settings) if self.settings else None}


def kv_cache_bytes(shape: ModelShape, sequences: int, tokens: int, dtype_bytes: int) -> int:
    """Keys and values of every layer: layers x 2 x kv_heads x head_dim values per token."""
    return shape.layers * 2 * shape.kv_dim * sequences * tokens * dtype_bytes


def layer_work_per_token(shape: ModelShape, act_bytes: int) -> int:
    """One decoder layer's working set per token of a forward pass without gradients (a prefill, a reward model's
    scoring): q, k, v, the attention output and three MLP-wide vectors."""
    return (2 * shape.q_dim + 2 * shape.kv_dim + 3 * shape.intermediate) * act_bytes


def generation_phase(shape: ModelShape, s: GrpoSettings, act_bytes: int) -> dict[str, int]:
    """What generating one round with transformers' generate() adds: the round's KV cache at its longest, and the
    larger of a decoding step's float32 logits of the last position (logits_to_keep=1: the logits, the
    temperature-scaled scores, their softmax, a copy) and the prefill's one-layer working set over the prompts (q, k,
    v, the attention output and three MLP-wide vectors per token)."""
    if s.use_vllm:  # vLLM generates: colocated, its share holds the cache; a server, elsewhere
        return {}
    g = s.generation_batch
    work = {"generation_logits": g * shape.vocab * 4 * DECODE_LOGITS_COPIES,
            "prefill_layer": g * s.prompt_length * layer_work_per_token(shape, act_bytes)}
    larger = max(work, key=work.get)
    return {"kv_cache": kv_cache_bytes(shape, g, s.sequence, act_bytes), larger: work[larger]}


def fused_head_bytes(shape: ModelShape, s: GrpoSettings, act_bytes: int) -> int:
    """TRL's fused output layer over one loss batch, at its backward pass: the tile(s) of logits, the hidden states
    it keeps, their float32 gradient and, when the output layer trains (full) in 16 bits, the float32 gradient its
    weight accumulates in before it is cast to the weight's own (counted with the gradients)."""
    positions = s.batch_size * (s.sequence - 1) if s.device == "cpu" else s.batch_size * s.completion_length
    tile = min(positions, TILE_TOKENS) * min(shape.vocab, TILE_VOCAB)
    tiles = int(CPU_TILE_COPIES_BACKWARD * tile * 4) if s.device == "cpu" else tile * act_bytes
    weight_grad = shape.vocab * shape.hidden * 4 if s.train_type == "full" and act_bytes < 4 else 0
    return tiles + positions * shape.hidden * (act_bytes + 4) + weight_grad


def estimate_grpo_memory(config, s: GrpoSettings, capacity=None, overhead: int | None = None) -> GrpoMemory:
    """GRPO's peak memory per device (on CPU, of the whole process). `capacity`: the device's memory (bytes or a size
    such as 80GB); `overhead` (default 1 GiB on a CUDA device with a capacity, else 0): the CUDA context and the
    allocator's slack."""
    shape = ModelShape.from_config(config)
    capacity = parse_size(capacity) if capacity is not None else None
    overhead = (GiB if capacity is not None and s.device == "cuda" else 0) if overhead is None else overhead
    # the policy, its optimizer and one loss batch's activations, as sft's estimate counts them
    train = estimate_memory(
        shape, s.train_type, weight_dtype=s.weight_dtype, master_weights=s.master_weights, batch_size=s.batch_size,
        seq_len=s.sequence, lora_rank=s.lora_rank, lora_targets=s.lora_targets, lora_dropout=s.lora_dropout,
        gradient_checkpointing=s.gradient_checkpointing, zero_stage=s.zero_stage,
        offload_optimizer=s.offload_optimizer, offload_params=s.offload_params, world_size=s.world_size,
        overhead=0, padded=True, device=s.device, loss="model")
    act_bytes = DTYPE_BYTES[s.weight_dtype]
    parts = {"policy": train.parts["weights"], "optimizer": train.parts["optimizer"]}
    if "autocast_copies" in train.parts:
        parts["autocast_copies"] = train.parts["autocast_copies"]
    notes = []
    if s.separate_reference:
        parts["reference"] = train.parameters * DTYPE_BYTES[s.weight_dtype] // (
            s.world_size if s.zero_stage >= 3 and s.world_size > 1 else 1)
        notes.append(f"reference: a second copy of the model (full training with --beta {s.beta:g}); --beta 0 or "
                     "LoRA (the adapter disabled) needs none")
    else:
        parts["reference"] = 0
        notes.append("reference: none (--beta 0)" if s.beta == 0 else
                     "reference: the policy with its LoRA adapter disabled, no second copy")
    if s.colocated_vllm:
        if capacity is None:
            notes.append("vLLM colocated: its share of the GPU is --vllm_gpu_memory_utilization x the GPU's memory, "
                         "which is unknown here (give --gpu_memory)")
        parts["vllm_share"] = int(s.vllm_gpu_memory_utilization * capacity) if capacity else 0
    elif s.use_vllm:
        notes.append("vLLM server: generation runs on the server's GPUs, which this estimate does not cover")
    if s.reward_model_bytes:  # TRL prepares them as the policy: ZeRO-3 shards them, its param offload moves them
        if s.zero_stage >= 3 and s.offload_params:
            notes.append(f"reward models: {human(s.reward_model_bytes)} offloaded to CPU memory with the policy")
        else:
            parts["reward_models"] = s.reward_model_bytes // (
                s.world_size if s.zero_stage >= 3 and s.world_size > 1 else 1)
    if s.reward_models_not_estimated:
        notes.append("reward models not estimated (their base's config.json is not at hand): "
                     + ", ".join(s.reward_models_not_estimated))
    if overhead:
        parts["overhead"] = overhead
    if s.device == "cpu":
        parts["process"] = CPU_PROCESS_BYTES
    phases = {"generation": generation_phase(shape, s, act_bytes),
              "loss": {"gradients": train.parts["gradients"], "activations": train.parts["activations"],
                       "attention_mask": train.parts.get("attention_mask", 0),
                       "loss_logits": fused_head_bytes(shape, s, act_bytes)}}
    if s.reward_scoring_per_token:
        phases["reward_scoring"] = {"reward_model_layer": s.generation_batch * s.sequence * s.reward_scoring_per_token}
    return GrpoMemory(parts, train.cpu_offload, train.parameters, train.trainable, capacity, notes + train.notes,
                      phases=phases, settings=s)


def vllm_problem(config, s: GrpoSettings, capacity: int | None) -> str | None:
    """Why a colocated vLLM share cannot hold the model's weights and one completion's KV cache, or None."""
    if not s.colocated_vllm or not capacity:
        return None
    shape = ModelShape.from_config(config)
    weights = shape.parameters() * DTYPE_BYTES[s.weight_dtype]
    need = weights + kv_cache_bytes(shape, 1, s.sequence, DTYPE_BYTES[s.weight_dtype])
    share = s.vllm_gpu_memory_utilization * capacity
    if share >= need:
        return None
    return (f"--vllm_gpu_memory_utilization {s.vllm_gpu_memory_utilization:g} gives vLLM {human(share)} of "
            f"{human(capacity)}, less than its copy of the weights and one completion's KV cache ({human(need)}); "
            f"give at least {need / capacity:.2f}.")


def alternatives(config, s: GrpoSettings, capacity: int, overhead: int | None = None) -> list[str]:
    """The changes that would shrink the estimate, each with the estimate it gives (and whether that fits)."""
    changes: list[tuple[str, GrpoSettings]] = []
    per_generation = s.generation_batch // max(1, s.batch_size)
    if per_generation > 1:
        fewer = per_generation // 2
        changes.append((f"--steps_per_generation {fewer} (a smaller generation round)",
                        dataclasses.replace(s, generation_batch=s.batch_size * fewer)))
    if s.completion_length > 16:
        shorter = s.completion_length // 2
        changes.append((f"--max_completion_length {shorter}", dataclasses.replace(s, completion_length=shorter)))
    if s.batch_size > 1:
        smaller = s.batch_size // 2
        changes.append((f"--per_device_train_batch_size {smaller} (--gradient_accumulation_steps x2 keeps the global "
                        "batch)", dataclasses.replace(s, batch_size=smaller,
                                                      generation_batch=smaller * per_generation)))
    if s.train_type == "full":
        changes.append(("--train_type lora", dataclasses.replace(s, train_type="lora")))
        if s.beta > 0:
            changes.append(("--beta 0 (no reference copy)", dataclasses.replace(s, beta=0.0)))
    if not s.gradient_checkpointing:
        changes.append(("--gradient_checkpointing true", dataclasses.replace(s, gradient_checkpointing=True)))
    if s.device == "cuda":
        shape = ModelShape.from_config(config)
        dtype_bytes = DTYPE_BYTES[s.weight_dtype]
        vllm_need = (shape.parameters() * dtype_bytes
                     + kv_cache_bytes(shape, s.generation_batch, s.sequence, dtype_bytes))
        share = min(0.9, round(vllm_need / capacity + 0.05, 2))
        if not s.colocated_vllm or s.vllm_gpu_memory_utilization > share:
            changes.append((f"--use_vllm true --vllm_mode colocate --vllm_gpu_memory_utilization {share:g}",
                            dataclasses.replace(s, use_vllm=True, vllm_mode="colocate",
                                                vllm_gpu_memory_utilization=share)))
        if s.use_vllm:
            changes.append(("--vllm_mode server (generation on other GPUs)",
                            dataclasses.replace(s, vllm_mode="server")))
    lines = []  # --num_generations is not among them: TRL's batches count completions, so fewer generations per
    # prompt means more prompts per round, the same number of completions
    for text, changed in changes:
        est = estimate_grpo_memory(config, changed, capacity, overhead)
        lines.append(f"{text}: {human(est.total)}" + (" (fits)" if est.fits else ""))
    return lines


def format_grpo_memory(est: GrpoMemory, title: str = "GRPO memory estimate") -> str:
    """The plan's GRPO memory block: the parts held throughout, each phase, the peak against the device."""
    s = est.settings
    lines = [f"{title}: {human(est.total)} per device at its peak ({est.peak_phase}); {est.parameters / 1e6:,.1f} M "
             f"parameters, {est.trainable / 1e6:,.2f} M trainable"]
    held = {k: v for k, v in est.parts.items() if v}
    lines.append("  held throughout: " + ", ".join(f"{k} {human(v)}" for k, v in held.items()))
    if s is not None:
        lines.append(f"  generation ({s.generation_batch} completions x ({s.prompt_length} prompt + "
                     f"{s.completion_length} completion tokens)): "
                     + (", ".join(f"{k} {human(v)}" for k, v in est.phases["generation"].items())
                        or ("in vLLM's share" if s.colocated_vllm else "on the vLLM server")))
        lines.append(f"  loss ({s.batch_size} completions x {s.sequence} tokens): "
                     + ", ".join(f"{k} {human(v)}" for k, v in est.phases["loss"].items() if v))
        if "reward_scoring" in est.phases:
            lines.append(f"  reward models scoring ({s.generation_batch} completions x {s.sequence} tokens): "
                         + ", ".join(f"{k} {human(v)}" for k, v in est.phases["reward_scoring"].items()))
    if est.cpu_offload:
        lines.append(f"  offloaded to CPU memory: {human(est.cpu_offload)}")
    if est.capacity is not None:
        where = "this machine's available memory" if s is not None and s.device == "cpu" else "the device's memory"
        lines.append(f"  {'fits' if est.fits else 'does NOT fit'} in {human(est.capacity)} ({where})")
    lines += [f"  note: {n}" for n in est.notes]
    return "\n".join(lines)
