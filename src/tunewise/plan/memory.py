"""A memory estimate for training or inference, from a model's config.json.

`estimate_memory(config, ...)` adds up weights, gradients, optimizer states, activations (with or without gradient
checkpointing), LoRA, ZeRO-1/2/3 sharding and CPU offload, or the KV cache for inference (GQA), and says whether it
fits a given memory size. `ModelShape` reads the numbers that decide it from a decoder-only (Qwen2 / Llama) config.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from tunewise.errors import UserError

GiB = 1024 ** 3
LOSS_CHUNK_BYTES = 64 << 20  # --chunked_loss: one chunk's float32 logits (tunewise.train.loss)
# A CPU run's process before any tensor of the model: Python with torch, transformers, peft, accelerate and the
# tokenizer loaded, plus the allocator's working slack. Measured 0.43 GiB after the imports alone (torch 2.13,
# transformers 5.23, 2026-12-02) and 0.55-0.60 GiB for whole runs of the 4.4 M-parameter embedded model.
CPU_PROCESS_BYTES = int(0.55 * GiB)
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


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


def quantized_weight_bytes(shape: ModelShape, bits: int, double_quant: bool = True) -> int:
    """Bytes of the decoder layers' linear weights in bitsandbytes' format (the output head and embeddings are not
    quantized). 4-bit: half a byte a weight plus a float32 absmax per block of 64 (double quant: a byte per block and
    a float32 per 256 blocks); 8-bit (LLM.int8): a byte a weight plus a float32 scale per output row."""
    total = 0
    for a, b in shape.linears().values():
        n = a * b
        if bits == 4:
            blocks = -(-n // 64)
            total += n // 2 + (blocks + 4 * -(-blocks // 256) if double_quant else 4 * blocks)
        else:
            total += n + 4 * b
    return total * shape.layers


def linear_parameters(shape: ModelShape) -> int:
    """The decoder layers' linear weights (what bitsandbytes quantizes)."""
    return shape.layers * sum(a * b for a, b in shape.linears().values())


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
                    padding_free: bool = False, chunked_loss: bool = False, device: str = "cuda",
                    loss: str | None = None, trained_share: float = 1.0, quant_bits: int | None = None,
                    double_quant: bool = True, score_head: bool = False) -> MemoryEstimate:
    """Peak memory per device of training (train_type "lora" | "full") or inference ("inference").

    weight_dtype: how the weights are held (default: the config's dtype); compute_dtype: activations (default:
    weight_dtype; bfloat16 with float32 weights = autocast). master_weights: a float32 copy of 16-bit trainable
    weights (DeepSpeed / apex mixed precision; AdamW states are then float32 too). Plain torch AdamW keeps its two
    states in the parameters' dtype. LoRA adapters are float32 (peft upcasts them). ZeRO shards optimizer states
    (stage >= 1), gradients (>= 2) and weights (3) over `world_size`; offload moves optimizer states (and, with
    offload_params under stage 3, weights) to CPU memory. `overhead` (default 1 GiB when `capacity` is given,
    else 0) stands for the CUDA context and allocator slack. Inference: weights + KV cache for
    `kv_cache_tokens` (default batch_size * seq_len) tokens, 2 * layers * kv_heads * head_dim values each.
    padded (default: batch_size > 1 without padding_free): batches are padded, so SDPA gets a batch x seq x seq
    mask per layer. padding_free: the batch is one sequence of batch_size * seq_len tokens at most, whose
    block-diagonal mask (one byte per pair of tokens) all layers share. chunked_loss: the output layer and the loss
    run a bounded chunk of positions at a time (--chunked_loss) instead of keeping every position's logits. loss:
    the run's loss path (tunewise.models.device; overrides chunked_loss): "chunks" (as chunked_loss), "trained"
    (the `trained_share` of the positions in one pass, logits in the compute dtype plus float32 log-probs and
    gradients), "inside" (the same, computed by the model), "liger" (fused: chunks of about the hidden states'
    size) or "model".
    quant_bits (QLoRA, LoRA or inference only): the decoder's linear weights in bitsandbytes' 4 or 8 bits
    (`quantized_weight_bytes`; double_quant for 4 bits) and, in training, the other weights (embeddings, norms,
    the output head) in float32, as peft's prepare_model_for_kbit_training casts them; the backward dequantizes one
    linear weight at a time into the compute dtype.
    device: "cuda" or "cpu" (dropout masks are bytes on CUDA, floats on CPU; on CPU the estimate is of the whole
    process, CPU_PROCESS_BYTES included).
    score_head: the model is a sequence classifier with one output (a reward model, `--rlhf_type rm`): a
    hidden-size score head in place of the output layer (an untied model loads no vocabulary-wide head) and one
    value a position instead of vocabulary-wide logits."""
    shape = ModelShape.from_config(config)
    wdt = weight_dtype or (shape.dtype if shape.dtype in DTYPE_BYTES else "float32")
    cdt = compute_dtype or wdt
    if wdt not in DTYPE_BYTES or cdt not in DTYPE_BYTES:
        raise UserError(f"dtype must be one of {', '.join(DTYPE_BYTES)}.")
    if train_type not in ("lora", "full", "inference"):
        raise UserError(f"train_type {train_type}: expected lora, full or inference.")
    if quant_bits is not None and (quant_bits not in (4, 8) or train_type == "full"):
        raise UserError(f"quant_bits {quant_bits}: 4 or 8, for LoRA training or inference.")
    wb, ab = DTYPE_BYTES[wdt], DTYPE_BYTES[cdt]
    params = shape.parameters()
    if score_head:  # Qwen2ForSequenceClassification: the embeddings, no lm_head, score = Linear(hidden, 1)
        params += shape.hidden - (0 if shape.tied_embeddings else shape.vocab * shape.hidden)
    capacity = parse_size(capacity) if capacity is not None else None
    overhead = (GiB if capacity is not None else 0) if overhead is None else overhead
    tokens = batch_size * seq_len
    notes: list[str] = []
    parts: dict[str, int] = {}
    cpu = 0

    quantized = quantized_weight_bytes(shape, quant_bits, double_quant) if quant_bits else 0
    if quant_bits:
        notes.append(f"base linear weights in bitsandbytes {quant_bits}-bit: {human(quantized)} (in {wdt}: "
                     f"{human(linear_parameters(shape) * wb)})")
    if train_type == "inference":
        parts["weights"] = params * wb if not quant_bits else quantized + (params - linear_parameters(shape)) * wb
        n = kv_cache_tokens if kv_cache_tokens is not None else tokens
        parts["kv_cache"] = 2 * shape.layers * shape.kv_dim * n * ab
        # the last position, float32, a couple of copies: vocabulary-wide, or a score head's one value
        parts["logits"] = batch_size * (1 if score_head else shape.vocab) * 4 * 2
        if shape.kv_heads < shape.heads:
            notes.append(f"GQA: {shape.kv_heads} KV heads for {shape.heads} query heads, the KV cache is "
                         f"{shape.heads // shape.kv_heads}x smaller than with full multi-head attention")
        if overhead:
            parts["overhead"] = overhead
        return MemoryEstimate(parts, 0, params, 0, capacity, notes)

    lora = train_type == "lora"
    trainable = lora_parameters(shape, lora_rank, lora_targets) if lora else params
    if lora and score_head:  # peft's SEQ_CLS adapter trains the score head too (modules_to_save)
        trainable += shape.hidden
    tb = 4 if lora else wb  # bytes of a trainable parameter
    master = master_weights and tb < 4
    state_b = 4 if (master or tb == 4) else tb
    shard = lambda n, stage: n // world_size if zero_stage >= stage and world_size > 1 else n

    weights = params * wb + (trainable * tb if lora else 0)
    if quant_bits:  # the rest in float32 (prepare_model_for_kbit_training); one weight dequantized at a time
        weights = quantized + (params - linear_parameters(shape)) * 4 + trainable * tb
        dequantized = max(a * b for a, b in shape.linears().values()) * ab
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
    if quant_bits:
        parts["dequantized"] = dequantized
    parts["gradients"] = shard(grads, 2)
    parts["optimizer"] = shard(optimizer, 1)
    if master:
        notes.append("float32 master weights + AdamW states: 12 bytes per trainable parameter")
    if cdt != wdt and not lora and ab < wb:
        parts["autocast_copies"] = shard(params * ab, 3)  # 16-bit copies of the float32 weights kept for backward

    padded = batch_size > 1 and not padding_free if padded is None else padded
    per_layer = activation_bytes_per_token(shape, train_type, ab, lora_rank, lora_dropout, padded, device)
    with_gc = tokens * (shape.layers * shape.hidden * ab + per_layer)  # layer inputs + one layer recomputed
    without_gc = tokens * shape.layers * per_layer
    acts = with_gc if gradient_checkpointing else without_gc
    notes.append(f"activations {human(without_gc)} without gradient checkpointing, {human(with_gc)} with it"
                 + (" (on)" if gradient_checkpointing else " (off)"))
    parts["activations"] = acts + tokens * shape.hidden * 3 * ab  # + the final norm and the head's input
    if padded:  # SDPA with a padding mask: a batch x 1 x seq x seq mask kept by every layer
        parts["attention_mask"] = shape.layers * batch_size * seq_len * seq_len * ab
    elif padding_free and batch_size > 1:  # the rows' block-diagonal mask, built once per step
        parts["attention_mask"] = tokens * tokens
    loss = "score" if score_head else loss or ("chunks" if chunked_loss else "model")
    if loss == "score":  # one value a position (the sequence's last is pooled), its float32 copy and gradient
        parts["logits"] = tokens * (ab + 2 * 4)
    elif loss == "chunks":  # a chunk's logits, log-probs and their gradient at a time; the trained states and their grads
        chunk = min(tokens, max(1, LOSS_CHUNK_BYTES // (4 * shape.vocab)))
        parts["logits"] = chunk * shape.vocab * 3 * 4 + tokens * shape.hidden * 2 * ab
    elif loss in ("trained", "inside"):
        trained = max(1, int(tokens * trained_share))
        parts["logits"] = trained * shape.vocab * (ab + 2 * 4) + tokens * shape.hidden * 2 * ab
    elif loss == "liger":  # Liger's chunks hold about as many logits as the batch has hidden values
        parts["logits"] = tokens * shape.hidden * (2 * ab + 2 * 4)
    else:  # the loss: float32 log-probs kept for backward, then two gradients of that size (the logits are freed)
        parts["logits"] = tokens * shape.vocab * (3 * 4 + (ab if ab < 4 else 0))
    if overhead:
        parts["overhead"] = overhead
    if device == "cpu":
        parts["process"] = CPU_PROCESS_BYTES
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
