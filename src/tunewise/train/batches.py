"""How encoded rows become the batches `tunewise sft` trains on: padded (transformers' DataCollatorForSeq2Seq) or
padding-free (DataCollatorWithFlattening: the batch's rows concatenated into one sequence of shape [1, tokens] whose
position_ids restart at 0 for each row, with -100 at each row's first label so no label crosses a boundary).

Padding-free is exact only when the model keeps attention inside each row. transformers' own models do: their mask
code (masking_utils.find_packed_sequence_indices) turns restarting position_ids into a block-diagonal mask for SDPA and
eager attention, and flash-attention takes the rows' boundaries (cu_seq_lens) as varlen. A model with its own
attention code may not, so it is checked, not assumed (`keeps_rows_apart`), before the first step.

SDPA with the block-diagonal mask works, but costs what the whole sequence would: attention over all T x T pairs of
the batch's tokens, and on CPU a float copy of the T x T mask kept by every layer (measured: +84 MB for 4 rows of
516 tokens on the 4-layer embedded model; 24 layers of Qwen2.5-0.5B at 4 x 1,000 tokens would keep 1.5 GB). So the
batch carries the rows' boundaries (as for flash-attention), and `PackedAttention`, registered as transformers'
"sdpa" attention, runs a packed batch without a mask: on CUDA through one varlen flash-attention call per layer
(torch.nn.attention.varlen), on a CPU by SDPA causally on each row alone (the padded batch's arithmetic without its
padding). Anything else (generation, padded batches, sliding windows) goes to transformers' SDPA as is. Which path
a run takes is decided with the device (tunewise.models.device) and shown in the plan.
"""
from __future__ import annotations

import torch

from tunewise.data.encode import IGNORE
from tunewise.data.packing import unpack

ROW_BOUNDARIES = ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k")  # flash-attention's varlen kwargs
PROBE_LAYERS = 2  # keeps_rows_apart runs the model's first layers only: every layer runs the same attention code


def torch_varlen_kernel():
    """torch's own flash-attention varlen entry (torch.nn.attention.varlen, torch >= 2.10, CUDA), called causally on
    [tokens, heads, head_dim] tensors, or None where this torch has none. torch 2.10 spells causal `is_causal=True`,
    later versions `window_size=(-1, 0)`; without `enable_gqa` the key/value heads are repeated for the query heads."""
    import inspect

    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    params = inspect.signature(varlen_attn).parameters
    causal = {"window_size": (-1, 0)} if "window_size" in params else {"is_causal": True}

    def kernel(query, key, value, bounds, longest, scale):
        extra = {}
        if key.shape[1] != query.shape[1]:
            if "enable_gqa" in params:
                extra["enable_gqa"] = True
            else:
                key = key.repeat_interleave(query.shape[1] // key.shape[1], dim=1)
                value = value.repeat_interleave(query.shape[1] // value.shape[1], dim=1)
        bounds = bounds.to(torch.int32)
        return varlen_attn(query, key, value, bounds, bounds, longest, longest, scale=scale, **causal, **extra)

    return kernel


class PackedAttention:
    """transformers' sdpa_attention_forward, except for a padding-free training batch (one sequence, the rows'
    boundaries in cu_seq_lens_q, no cache). There, on `kernel_device`, a varlen `kernel` (`(query, key, value,
    bounds, longest row, scale)` on [tokens, heads, head_dim] tensors, causal within each row) attends the whole
    batch in one call per layer; elsewhere (the CPU, float32, attention dropout) each row is attended alone by SDPA,
    causally, without a mask."""

    def __init__(self, kernel=None, kernel_device: str = "cuda"):
        self.kernel = kernel
        self.kernel_device = kernel_device

    def __call__(self, module, query, key, value, attention_mask, **kwargs):
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        bounds = kwargs.get("cu_seq_lens_q")
        if (bounds is None or query.shape[0] != 1 or query.shape[2] != key.shape[2]
                or kwargs.get("sliding_window") is not None):
            return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
        rest = {k: v for k, v in kwargs.items() if k not in ROW_BOUNDARIES}
        dropout = rest.get("dropout", 0.0) if module.training else 0.0
        if self.kernel is not None and query.device.type == self.kernel_device and not dropout:
            # [1, heads, tokens, head_dim] -> [tokens, heads, head_dim], as varlen kernels take them
            out = self.kernel(query[0].transpose(0, 1), key[0].transpose(0, 1), value[0].transpose(0, 1), bounds,
                              int(kwargs.get("max_length_q") or query.shape[2]), rest.get("scaling"))
            return out.unsqueeze(0), None  # [1, tokens, heads, head_dim], as sdpa_attention_forward returns
        bounds = bounds.tolist()
        rows = [sdpa_attention_forward(module, query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], None, **rest)[0]
                for a, b in zip(bounds, bounds[1:])]
        return torch.cat(rows, dim=1), None


def use_packed_attention(kernel=None, kernel_device: str = "cuda") -> None:
    """Register PackedAttention as transformers' "sdpa" (models loaded with the default attention use it)."""
    from transformers import AttentionInterface

    AttentionInterface.register("sdpa", PackedAttention(kernel, kernel_device))


class SftBatches:
    """The data collator: padded or padding-free batches. `logits`: which positions the model projects onto the
    vocabulary (its forward's logits_to_keep): "all" (the model's own loss), "none" (the chunked loss runs the
    output layer itself) or "trained" (only the positions whose next token is trained; tunewise.train.loss)."""

    def __init__(self, tokenizer, padding_free: bool, logits: str = "all", tokens: int | None = None):
        """tokens: with --packing, every padding-free batch is filled to exactly this many tokens (per device batch
        x --max_length) by a last row of padding that attends only to itself and trains nothing, so each step has
        one shape (torch.compile compiles once, the GPU's allocator reuses its blocks)."""
        from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening

        self.padding_free = padding_free
        self.logits = logits
        self.tokens = tokens
        self.pad_id = (tokenizer.pad_token_id if tokenizer is not None and tokenizer.pad_token_id is not None
                       else 0)
        # the rows' boundaries: flash-attention's varlen and PackedAttention read them
        self.collate = (DataCollatorWithFlattening(separator_id=IGNORE, return_flash_attn_kwargs=True)
                        if padding_free
                        else DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE))

    def __call__(self, features: list[dict]) -> dict:
        from tunewise.train.loss import next_token_targets

        batch = self.collate(unpack(features) if self.padding_free else features)
        if self.padding_free:  # transformers finds the rows in position_ids only when no cache is built
            batch["use_cache"] = False
            if self.tokens:
                fill_to(batch, self.tokens, self.pad_id)
        if self.logits == "none":
            batch["logits_to_keep"] = torch.zeros(0, dtype=torch.long)
        elif self.logits == "trained":
            batch["logits_to_keep"] = next_token_targets(batch["labels"]) != IGNORE
        return batch


def fill_to(batch: dict, tokens: int, pad_id: int) -> None:
    """A padding-free batch grown to `tokens` tokens by one last row of `pad_id` (labels IGNORE, positions from 0,
    its own boundary), in place; a batch already that long is left as it is."""
    missing = tokens - batch["input_ids"].shape[1]
    if missing <= 0:
        return
    batch["input_ids"] = torch.cat([batch["input_ids"], torch.full((1, missing), pad_id)], dim=1)
    batch["labels"] = torch.cat([batch["labels"], torch.full((1, missing), IGNORE)], dim=1)
    batch["position_ids"] = torch.cat([batch["position_ids"], torch.arange(missing).unsqueeze(0)], dim=1)
    for key in ("cu_seq_lens_q", "cu_seq_lens_k"):
        bounds = batch[key]
        batch[key] = torch.cat([bounds, torch.tensor([tokens], dtype=bounds.dtype)])
    for key in ("max_length_q", "max_length_k"):
        batch[key] = max(batch[key], missing)


def tolerance(dtype) -> float:
    """How far packed and separate outputs may differ, relative to the largest logit, in `dtype`: the same rows
    computed in two batch shapes round differently (kernels are chosen per shape), by a few units of the dtype's
    resolution (float32: ~1e-7; bf16: 0.0078). Attention that crosses rows moves the logits by whole units."""
    return max(1e-4, 4 * torch.finfo(dtype).eps)


@torch.no_grad()
def keeps_rows_apart(model, rows: list[list[int]], device=None, layers: int | None = PROBE_LAYERS
                     ) -> tuple[bool, float, float]:
    """(whether the model's outputs for `rows` in one padding-free batch, as SftBatches makes it, equal its outputs
    for each row alone within `tolerance` of its dtype, the largest difference, the allowed difference): the check
    padding-free training relies on. Runs the model's first `layers` decoder layers only (None: all), on `device`
    (the training device; default where the model is), in eval mode, without a cache (as the Trainer trains), on the
    model as it is before training; the model is left where and as it was."""
    batch = SftBatches(None, padding_free=True)([{"input_ids": r, "labels": r} for r in rows])
    del batch["labels"]
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    was_training = model.training
    with first_layers(base, layers), on_device(model, device) as where:
        model.eval()
        try:
            batch = {k: v.to(where) if torch.is_tensor(v) else v for k, v in batch.items()}
            alone = torch.cat([model(input_ids=torch.tensor([r], device=where), use_cache=False).logits[0]
                               for r in rows])
            packed = model(**batch).logits[0]
        finally:
            model.train(was_training)
    diff = (packed.float() - alone.float()).abs().max().item()
    allowed = tolerance(alone.dtype) * max(1.0, alone.float().abs().max().item())
    return diff <= allowed, diff, allowed


class first_layers:
    """Within the block, the decoder holds only its first `count` layers (when it keeps them as `.layers`)."""

    def __init__(self, base, count: int | None):
        decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
        self.decoder = decoder if count and isinstance(getattr(decoder, "layers", None), torch.nn.ModuleList) else None
        self.count = count

    def __enter__(self):
        if self.decoder is not None:
            self.layers = self.decoder.layers
            self.decoder.layers = torch.nn.ModuleList(list(self.layers)[:self.count])

    def __exit__(self, *exc):
        if self.decoder is not None:
            self.decoder.layers = self.layers


class on_device:
    """Within the block, the model's (truncated) modules are on `device`; back where they were after."""

    def __init__(self, model, device):
        self.model = model
        self.home = next(model.parameters()).device
        self.device = torch.device(device) if device is not None else self.home

    def __enter__(self):
        if self.device != self.home:
            self.model.to(self.device)
        return self.device

    def __exit__(self, *exc):
        if self.device != self.home:
            self.model.to(self.home)


def probe_rows(dataset, count: int = 3, length: int = 12) -> list[list[int]]:
    """A few short token sequences from the training rows, for keeps_rows_apart: the second and later rows would
    see the first if attention crossed rows."""
    rows = [list(dataset[i]["input_ids"][:length]) for i in range(min(count, len(dataset)))]
    while len(rows) < 2:  # one training row: the check still needs two sequences
        rows.append(list(reversed(rows[0])))
    return rows
