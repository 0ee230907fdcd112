"""Hyper-parameter advice and a memory estimate, each with its reason.

`advise(num_samples, train_type, ...)` recommends learning rate, epochs, warm-up, LoRA rank and alpha from the data
size, the method and the model size, and warns when chosen values are far from it. Sources: practitioners' findings
for Qwen2.5-7B LoRA on identity data (< 100 samples: lr 1e-4, 8-12 epochs; 100-500: 3-5 epochs with early stopping;
> 500: 2-3 epochs with early stopping; full fine-tuning of large sets lr 1e-5-2e-5; warm-up 0.05-0.1); a built-in
model's own recommended values (tunewise.json) take precedence for that model.

`estimate_memory(config, ...)` adds up weights, gradients, optimizer states, activations (with or without gradient
checkpointing), LoRA, ZeRO-1/2/3 sharding and CPU offload, or the KV cache for inference (GQA), from a model's
config.json, and says whether it fits a given memory size.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from tunewise.errors import UserError

GiB = 1024 ** 3
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
IDENTITY_FEW_ROWS = 200  # identity data up to this many rows follows the 8-12 epoch rule (the guide says ~100)


# ---------------------------------------------------------------------------------------------------------------
# model shape and parameter count
@dataclass
class ModelShape:
    """The numbers of a decoder-only (Qwen2 / Llama family) config.json that decide memory."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied_embeddings: bool = False
    head_dim: int | None = None
    qkv_bias: bool = False
    dtype: str = "float32"

    def __post_init__(self):
        self.head_dim = self.head_dim or self.hidden // self.heads

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @classmethod
    def from_config(cls, config) -> "ModelShape":
        """From a config.json dict, a path to it, or a model directory."""
        if isinstance(config, ModelShape):
            return config
        if not isinstance(config, dict):
            path = Path(config)
            path = path / "config.json" if path.is_dir() else path
            if not path.is_file():
                raise UserError(f"{path}: no config.json, so the model's size is unknown.")
            config = json.loads(path.read_text(encoding="utf-8"))
        config = {**config.get("text_config", {}), **config}
        try:
            return cls(
                layers=config["num_hidden_layers"], hidden=config["hidden_size"], heads=config["num_attention_heads"],
                kv_heads=config.get("num_key_value_heads") or config["num_attention_heads"],
                intermediate=config["intermediate_size"], vocab=config["vocab_size"],
                tied_embeddings=bool(config.get("tie_word_embeddings", False)), head_dim=config.get("head_dim"),
                qkv_bias=bool(config.get("attention_bias", config.get("model_type") == "qwen2")),
                dtype=str(config.get("torch_dtype") or config.get("dtype") or "float32").replace("torch.", ""),
            )
        except KeyError as e:
            raise UserError(f"config.json has no {e.args[0]}; the memory estimate needs a decoder-only config.") from None

    def linears(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each linear layer of one decoder layer."""
        h, i = self.hidden, self.intermediate
        return {"q_proj": (h, self.q_dim), "k_proj": (h, self.kv_dim), "v_proj": (h, self.kv_dim),
                "o_proj": (self.q_dim, h), "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def parameters(self) -> int:
        per_layer = sum(a * b for a, b in self.linears().values()) + 2 * self.hidden
        if self.qkv_bias:
            per_layer += self.q_dim + 2 * self.kv_dim
        embeddings = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        return self.layers * per_layer + embeddings + self.hidden


def lora_parameters(shape: ModelShape, rank: int, targets=("all-linear",)) -> int:
    """r * (in + out) for every targeted linear of every layer (all-linear: every linear but the output head)."""
    names = ALL_LINEAR if list(targets) in (["all-linear"], ["all"]) else targets
    return shape.layers * sum(rank * (a + b) for n, (a, b) in shape.linears().items() if n in names)


def parse_size(text) -> int:
    """'24GiB', '80GB', '16g', '1.5TiB' or a number of bytes -> bytes (GB = 10^9, GiB and bare G = 2^30)."""
    if isinstance(text, (int, float)):
        return int(text)
    m = re.fullmatch(r"\s*([\d.]+)\s*([kmgt]?)(i?)(b?)\s*", str(text).lower())
    if not m:
        raise UserError(f"--gpu_memory {text}: expected a size such as 24GiB or 80GB.")
    number, unit, binary, b = m.groups()
    power = " kmgt".index(unit) if unit else 0
    base = 1000 if (b and not binary) else 1024
    return int(float(number) * base ** power)


def human(n: float) -> str:
    return f"{n / GiB:.2f} GiB" if n >= 0.1 * GiB else f"{n / 1024 ** 2:.1f} MiB"


# ---------------------------------------------------------------------------------------------------------------
# memory
@dataclass
class MemoryEstimate:
    parts: dict[str, int]  # bytes on each device, by kind
    cpu_offload: int  # bytes held in CPU memory (offloaded optimizer states / parameters)
    parameters: int
    trainable: int
    capacity: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    @property
    def fits(self) -> bool | None:
        return None if self.capacity is None else self.total <= self.capacity

    def as_dict(self) -> dict:
        return {"parts": self.parts, "total": self.total, "cpu_offload": self.cpu_offload, "parameters": self.parameters,
                "trainable": self.trainable, "capacity": self.capacity, "fits": self.fits, "notes": self.notes}


def activation_bytes_per_token(shape: ModelShape, train_type: str, act_bytes: int, lora_rank: int = 8,
                               lora_dropout: float = 0.05, padded: bool = False, device: str = "cuda") -> int:
    """Bytes autograd keeps per token for one decoder layer with SDPA/flash attention (no s*s score matrix),
    counted on the embedded model with saved-tensor hooks (transformers 5, peft 0.21) and generalised by shape.

    Full: six hidden-size vectors (RMSNorm inputs, normalized values and outputs, o_proj's input), the rotated q,
    k, v and the attention output, and four MLP vectors (gate, silu(gate), up, their product). With padding the
    SDPA path repeats k and v to every query head. 16-bit: RMSNorm keeps float32 copies too. LoRA: frozen linears
    keep nothing; each of the 7 adapted linears keeps a float32 (peft runs adapters in float32) dropped-out copy of
    its input and the dropout mask (one byte on CUDA, a full float on CPU)."""
    h, kv, i, q = shape.hidden, shape.kv_dim, shape.intermediate, shape.q_dim
    kv = q if padded else kv
    attention = (2 * q + 2 * kv) * act_bytes
    norm_f32 = 2 * 2 * h * 4 if act_bytes < 4 else 0
    if train_type == "full":
        return 6 * h * act_bytes + attention + 4 * i * act_bytes + norm_f32
    mask = 1 if device == "cuda" else 4
    if lora_dropout > 0:
        adapters = (6 * h + i) * (4 + mask)
    elif act_bytes < 4:
        adapters = (6 * h + i) * 4  # float32 copies of each adapted linear's input
    else:
        adapters = (3 * h + i) * 4  # the two norm outputs, o_proj's input and the product, shared
    return h * act_bytes + attention + 3 * i * act_bytes + adapters + norm_f32 // 2 + 7 * lora_rank * act_bytes


def estimate_memory(config, train_type: str = "lora", *, weight_dtype: str | None = None,
                    compute_dtype: str | None = None, master_weights: bool = False, batch_size: int = 1,
                    seq_len: int = 2048, lora_rank: int = 8, lora_targets=("all-linear",), lora_dropout: float = 0.05,
                    gradient_checkpointing: bool = False, zero_stage: int = 0, offload_optimizer: bool = False,
                    offload_params: bool = False, world_size: int = 1, capacity=None,
                    overhead: int | None = None, kv_cache_tokens: int | None = None, padded: bool | None = None,
                    device: str = "cuda") -> MemoryEstimate:
    """Peak memory per device of training (train_type "lora" | "full") or inference ("inference").

    weight_dtype: how the weights are held (default: the config's dtype); compute_dtype: activations (default:
    weight_dtype; bfloat16 with float32 weights = autocast). master_weights: a float32 copy of 16-bit trainable
    weights (DeepSpeed / apex mixed precision; AdamW states are then float32 too). Plain torch AdamW keeps its two
    states in the parameters' dtype. LoRA adapters are float32 (peft upcasts them). ZeRO shards optimizer states
    (stage >= 1), gradients (>= 2) and weights (3) over `world_size`; offload moves optimizer states (and, with
    offload_params under stage 3, weights) to CPU memory. `overhead` (default 1 GiB when `capacity` is given,
    else 0) stands for the CUDA context and allocator slack. Inference: weights + KV cache for
    `kv_cache_tokens` (default batch_size * seq_len) tokens, 2 * layers * kv_heads * head_dim values each.
    padded (default: batch_size > 1): batches are padded, so SDPA gets a batch x seq x seq mask per layer.
    device: "cuda" or "cpu" (dropout masks are bytes on CUDA, floats on CPU)."""
    shape = ModelShape.from_config(config)
    wdt = weight_dtype or (shape.dtype if shape.dtype in DTYPE_BYTES else "float32")
    cdt = compute_dtype or wdt
    if wdt not in DTYPE_BYTES or cdt not in DTYPE_BYTES:
        raise UserError(f"dtype must be one of {', '.join(DTYPE_BYTES)}.")
    if train_type not in ("lora", "full", "inference"):
        raise UserError(f"train_type {train_type}: expected lora, full or inference.")
    wb, ab = DTYPE_BYTES[wdt], DTYPE_BYTES[cdt]
    params = shape.parameters()
    capacity = parse_size(capacity) if capacity is not None else None
    overhead = (GiB if capacity is not None else 0) if overhead is None else overhead
    tokens = batch_size * seq_len
    notes: list[str] = []
    parts: dict[str, int] = {}
    cpu = 0

    if train_type == "inference":
        parts["weights"] = params * wb
        n = kv_cache_tokens if kv_cache_tokens is not None else tokens
        parts["kv_cache"] = 2 * shape.layers * shape.kv_dim * n * ab
        parts["logits"] = batch_size * shape.vocab * 4 * 2  # the last position, float32, a couple of copies
        if shape.kv_heads < shape.heads:
            notes.append(f"GQA: {shape.kv_heads} KV heads for {shape.heads} query heads, the KV cache is "
                         f"{shape.heads // shape.kv_heads}x smaller than with full multi-head attention")
        if overhead:
            parts["overhead"] = overhead
        return MemoryEstimate(parts, 0, params, 0, capacity, notes)

    lora = train_type == "lora"
    trainable = lora_parameters(shape, lora_rank, lora_targets) if lora else params
    tb = 4 if lora else wb  # bytes of a trainable parameter
    master = master_weights and tb < 4
    state_b = 4 if (master or tb == 4) else tb
    shard = lambda n, stage: n // world_size if zero_stage >= stage and world_size > 1 else n

    weights = params * wb + (trainable * tb if lora else 0)
    grads = trainable * tb
    optimizer = trainable * 2 * state_b + (trainable * 4 if master else 0)
    if zero_stage >= 3 and offload_params:
        cpu += weights
        weights = shape.linears()["gate_proj"][0] * shape.intermediate * 3 * wb  # about one layer gathered at a time
    else:
        weights = shard(weights, 3)
    if offload_optimizer and zero_stage >= 1:
        cpu += shard(optimizer, 1)
        optimizer = 0
    parts["weights"] = weights
    parts["gradients"] = shard(grads, 2)
    parts["optimizer"] = shard(optimizer, 1)
    if master:
        notes.append("float32 master weights + AdamW states: 12 bytes per trainable parameter")
    if cdt != wdt and not lora and ab < wb:
        parts["autocast_copies"] = shard(params * ab, 3)  # 16-bit copies of the float32 weights kept for backward

    padded = batch_size > 1 if padded is None else padded
    per_layer = activation_bytes_per_token(shape, train_type, ab, lora_rank, lora_dropout, padded, device)
    with_gc = tokens * (shape.layers * shape.hidden * ab + per_layer)  # layer inputs + one layer recomputed
    without_gc = tokens * shape.layers * per_layer
    acts = with_gc if gradient_checkpointing else without_gc
    notes.append(f"activations {human(without_gc)} without gradient checkpointing, {human(with_gc)} with it"
                 + (" (on)" if gradient_checkpointing else " (off)"))
    parts["activations"] = acts + tokens * shape.hidden * 3 * ab  # + the final norm and the head's input
    if padded:  # SDPA with a padding mask: a batch x 1 x seq x seq mask kept by every layer
        parts["attention_mask"] = shape.layers * batch_size * seq_len * seq_len * ab
    # the loss: float32 log-probs kept for backward, then two gradients of that size (the logits are freed first)
    parts["logits"] = tokens * shape.vocab * (3 * 4 + (ab if ab < 4 else 0))
    if overhead:
        parts["overhead"] = overhead
    return MemoryEstimate(parts, cpu, params, trainable, capacity, notes)


def format_memory(est: MemoryEstimate, title: str = "memory estimate") -> str:
    lines = [f"{title}: {human(est.total)} per device ({est.parameters / 1e6:,.1f} M parameters, "
             f"{est.trainable / 1e6:,.2f} M trainable)"]
    lines.append("  " + ", ".join(f"{k} {human(v)}" for k, v in est.parts.items() if v))
    if est.cpu_offload:
        lines.append(f"  offloaded to CPU memory: {human(est.cpu_offload)}")
    if est.capacity is not None:
        verdict = "fits" if est.fits else "does NOT fit"
        lines.append(f"  {verdict} in {human(est.capacity)}" + ("" if est.fits else
                     " (try gradient checkpointing, a smaller batch or max_length, LoRA, or DeepSpeed ZeRO-3/offload)"))
    lines += [f"  note: {n}" for n in est.notes]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# hyper-parameters
@dataclass
class Recommendation:
    name: str
    value: float
    reason: str
    low: float | None = None
    high: float | None = None


@dataclass
class Advice:
    recommendations: dict[str, Recommendation]
    warnings: list[str]

    def values(self) -> dict:
        return {k: r.value for k, r in self.recommendations.items()}


def advise(num_samples: int, train_type: str = "lora", model_parameters: int | None = None,
           recommended: dict | None = None, chosen: dict | None = None, identity_rows: int = 0,
           identity_recipe: dict | None = None) -> Advice:
    """Recommended learning_rate, num_train_epochs, warmup_ratio (and lora_rank, lora_alpha for LoRA) with reasons;
    `recommended`: a built-in model's own values (tunewise.json "recommended"[train_type]), which win; `chosen`:
    the values of a planned run, compared with the advice (warnings). `identity_rows`: how many of the samples are
    identity data (self-cognition rows with {{NAME}}/{{AUTHOR}}): their epoch rule goes by their own count, not
    the mix's; `identity_recipe`: a built-in model's measured identity recipe (tunewise.json "identity")."""
    if num_samples < 1:
        raise UserError("advice needs at least one training sample.")
    recs: dict[str, Recommendation] = {}
    size = f"{num_samples} samples"
    big = model_parameters is not None and model_parameters >= 1e9
    extra_warnings = []

    if 0 < identity_rows <= IDENTITY_FEW_ROWS:
        # A new name is learnt from its own rows: the general rows mixed in ride along and do not shorten it.
        mixed = num_samples - identity_rows
        ride = f"; the {mixed} general rows mixed in ride along" if mixed else ""
        if identity_recipe and "num_train_epochs" in identity_recipe:
            value = identity_recipe["num_train_epochs"]
            measured = f": --dataset {identity_recipe['mix']}" if identity_recipe.get("mix") else ""
            recs["num_train_epochs"] = Recommendation(
                "num_train_epochs", value, f"{identity_rows} identity rows: the model's measured identity recipe "
                f"(tunewise.json{measured} --num_train_epochs {value:g}){ride}", value, value)
        else:
            recs["num_train_epochs"] = Recommendation(
                "num_train_epochs", 10, f"{identity_rows} identity rows (a few hundred at most): "
                f"8-12 epochs for a new identity to take, 15+ starts parroting{ride}", 8, 12)
        if not mixed:
            mix = f" ({identity_recipe['mix']} for this model, measured)" if identity_recipe and identity_recipe.get(
                "mix") else ""
            extra_warnings.append(f"identity data alone: the fine-tune costs general skill; mix general data into "
                                  f"--dataset{mix}, as ms-swift's self-cognition recipe mixes alpaca data")
    elif num_samples < 100:
        recs["num_train_epochs"] = Recommendation("num_train_epochs", 10, f"{size} (< 100): 8-12 epochs are needed for "
                                                  "a new identity to take, more starts parroting", 8, 12)
    elif num_samples <= 500:
        recs["num_train_epochs"] = Recommendation("num_train_epochs", 4, f"{size} (100-500): 3-5 epochs, with early "
                                                  "stopping on a validation split", 3, 5)
    else:
        recs["num_train_epochs"] = Recommendation("num_train_epochs", 2, f"{size} (> 500): 2-3 epochs, with early "
                                                  "stopping on a validation split", 2, 3)
    if train_type == "lora":
        recs["learning_rate"] = Recommendation("learning_rate", 1e-4, "LoRA: 1e-4 (Qwen2.5-7B identity fine-tunes)",
                                               5e-5, 2e-4)
    elif num_samples > 500:
        recs["learning_rate"] = Recommendation("learning_rate", 1e-5, f"full fine-tuning, {size} (> 500): 1e-5-2e-5",
                                               1e-5, 2e-5)
    else:
        recs["learning_rate"] = Recommendation("learning_rate", 1e-5, "full fine-tuning: 1e-5 (every weight moves; "
                                               "ten times below LoRA)", 5e-6, 2e-5)
    recs["warmup_ratio"] = Recommendation("warmup_ratio", 0.05, "0.05-0.1 of the steps: enough to settle AdamW's "
                                          "moment estimates", 0.05, 0.1)
    if train_type == "lora":
        rank = 8 if num_samples <= 1000 else 16 if num_samples <= 10000 else 32
        recs["lora_rank"] = Recommendation("lora_rank", rank, f"{size}: rank {rank} holds it "
                                           + ("(identity data needs little capacity)" if rank == 8 else
                                              "(more data, more capacity)"), rank // 2 or 1, rank * 2)
        recs["lora_alpha"] = Recommendation("lora_alpha", 4 * rank, "alpha = 4 x rank (the ms-swift default 8/32): "
                                            "the update scale alpha/r stays 4 whatever the rank", 2 * rank, 8 * rank)
    if big and train_type == "full":
        recs["learning_rate"].reason += f"; {model_parameters / 1e9:.1f} B parameters"
    if recommended:
        for name in ("learning_rate", "warmup_ratio", "lora_rank", "lora_alpha", "num_train_epochs"):
            if name in recommended and (name in recs or name == "num_train_epochs"):
                value = recommended[name]
                recs[name] = Recommendation(name, value, "the model's own recommended value (tunewise.json), "
                                            "measured for it", value, value)
    identity = 0 < identity_rows <= IDENTITY_FEW_ROWS
    return Advice(recs, check_choices(recs, chosen or {}, identity_rows if identity else num_samples, identity)
                  + extra_warnings)


def check_choices(recs: dict[str, Recommendation], chosen: dict, num_samples: int, identity: bool = False) -> list[str]:
    """Warnings for chosen values far from the advice (`num_samples`: the identity rows when `identity`)."""
    warnings = []
    lr, rec_lr = chosen.get("learning_rate"), recs.get("learning_rate")
    if lr and rec_lr and (lr >= 5 * rec_lr.value or lr <= rec_lr.value / 5):
        direction = "high: the loss may spike or diverge" if lr > rec_lr.value else "low: it may not learn in time"
        warnings.append(f"learning_rate {lr:g} is {lr / rec_lr.value:.3g}x the advised {rec_lr.value:g}; too "
                        f"{direction}")
    epochs, rec_ep = chosen.get("num_train_epochs"), recs["num_train_epochs"]
    if epochs:
        if (identity or num_samples < 100) and epochs > 15:
            what = f"{num_samples} identity rows" if identity else f"{num_samples} samples (< 100)"
            warnings.append(f"num_train_epochs {epochs:g} on {what}: likely to parrot training answers; 8-12 suffice")
        elif rec_ep.high and epochs > 2 * rec_ep.high:
            warnings.append(f"num_train_epochs {epochs:g} is over twice the advised {rec_ep.low:g}-{rec_ep.high:g}: "
                            "likely to overfit (use early stopping)")
        elif rec_ep.low and epochs < rec_ep.low / 2:
            warnings.append(f"num_train_epochs {epochs:g} is under half the advised {rec_ep.low:g}-{rec_ep.high:g}: "
                            "the new behaviour may not take")
    warmup = chosen.get("warmup_ratio")
    if warmup is not None and warmup > 0.3:
        warnings.append(f"warmup_ratio {warmup:g}: a third or more of the run at a reduced learning rate")
    rank, alpha = chosen.get("lora_rank"), chosen.get("lora_alpha")
    if rank and alpha and not 1 <= alpha / rank <= 8:
        warnings.append(f"lora_alpha/lora_rank = {alpha / rank:g}: the update scale is usually 1-8 (alpha 2-4x rank)")
    return warnings


def format_advice(advice: Advice, chosen: dict | None = None, memory: MemoryEstimate | None = None) -> str:
    chosen = chosen or {}
    lines = ["advice:"]
    for name, rec in advice.recommendations.items():
        now = f" (planned {chosen[name]:g})" if name in chosen and chosen[name] is not None else ""
        lines.append(f"  {name:<17} {rec.value:<8g}{now}  {rec.reason}")
    lines += [f"WARNING: {w}" for w in advice.warnings]
    if memory is not None:
        lines.append(format_memory(memory))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
def _deepspeed_settings(prep) -> dict:
    if prep.deepspeed is None:
        return {}
    zero = prep.deepspeed.config.get("zero_optimization", {}) if isinstance(prep.deepspeed.config, dict) else {}
    off = lambda key: str(zero.get(key, {}).get("device", "none")) in ("cpu", "nvme")
    return {"zero_stage": int(zero.get("stage", 0)), "offload_optimizer": off("offload_optimizer"),
            "offload_params": off("offload_param"), "master_weights": True}


def plan_advice(prep, gpu_memory: str | None = None) -> str:
    """The advice and memory estimate for a prepared `tunewise sft`/`plan` run (tunewise.train.sft.Prepared)."""
    from tunewise.models.load import builtin_meta

    args = prep.args
    chosen = {"learning_rate": args.learning_rate, "num_train_epochs": args.num_train_epochs,
              "warmup_ratio": args.warmup_ratio if prep.schedule.warmup_steps else 0}  # 0: a default warm-up yielded
    if args.train_type == "lora":
        chosen.update(lora_rank=args.lora_rank, lora_alpha=args.lora_alpha)
    meta = builtin_meta(prep.model_dir)
    recommended = meta.get("recommended", {}).get(args.recipe())
    identity_recipe = meta.get("identity", {}).get(args.train_type)
    shape = None
    try:
        shape = ModelShape.from_config(prep.model_dir)
    except UserError:
        pass
    pairs = prep.start is not None  # dpo: rows are preference pairs, each a chosen and a rejected sequence
    advice = advise(len(prep.train_rows), args.train_type, shape.parameters() if shape else None, recommended, chosen,
                    prep.identity_rows, identity_recipe)
    if pairs:  # the epoch/lr rules come from identity SFT studies; for DPO only the warmup and LoRA shape carry over
        advice = Advice({k: v for k, v in advice.recommendations.items()
                         if k not in ("num_train_epochs", "learning_rate")},
                        [w for w in advice.warnings if "num_train_epochs" not in w and "learning_rate" not in w])
    memory = None
    if shape is not None:
        import torch

        if gpu_memory is None and torch.cuda.is_available():
            gpu_memory = torch.cuda.get_device_properties(0).total_memory
        dtype = args.torch_dtype if args.torch_dtype != "auto" else shape.dtype  # what load_model will give
        dtype = dtype if dtype in DTYPE_BYTES else "float32"
        # dpo: TRL pads pairs to --max_length at most and runs chosen and rejected as one batch of two per pair
        seq = args.max_length if pairs else max(len(r["input_ids"]) for r in prep.train_rows)
        device = "cuda" if torch.cuda.is_available() or gpu_memory is not None else "cpu"
        memory = estimate_memory(
            shape, args.train_type, weight_dtype=dtype, batch_size=args.per_device_train_batch_size * (2 if pairs else 1),
            seq_len=seq,
            lora_rank=args.lora_rank, lora_targets=args.target_modules, lora_dropout=args.lora_dropout,
            gradient_checkpointing=args.gradient_checkpointing, world_size=prep.step_plan.world_size,
            capacity=gpu_memory, device=device, **_deepspeed_settings(prep))
    return format_advice(advice, chosen, memory)

