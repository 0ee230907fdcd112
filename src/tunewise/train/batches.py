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
batch carries the rows' boundaries (as for flash-attention), and `rows_apart_sdpa`, registered as transformers'
"sdpa" attention, runs SDPA causally on each row alone when it sees them: the padded batch's arithmetic without its
padding, and no mask. Anything else (generation, padded batches, sliding windows) goes to transformers' SDPA as is.
"""
from __future__ import annotations

import torch

from tunewise.data.encode import IGNORE
from tunewise.data.packing import unpack

ROW_BOUNDARIES = ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k")  # flash-attention's varlen kwargs


def rows_apart_sdpa(module, query, key, value, attention_mask, **kwargs):
    """transformers' sdpa_attention_forward, except for a padding-free training batch (one sequence, the rows'
    boundaries in cu_seq_lens_q, no cache): there each row is attended alone, causally, without a mask."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    bounds = kwargs.get("cu_seq_lens_q")
    if (bounds is None or query.shape[0] != 1 or query.shape[2] != key.shape[2]
            or kwargs.get("sliding_window") is not None):
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    rest = {k: v for k, v in kwargs.items() if k not in ROW_BOUNDARIES}
    bounds = bounds.tolist()
    rows = [sdpa_attention_forward(module, query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], None, **rest)[0]
            for a, b in zip(bounds, bounds[1:])]
    return torch.cat(rows, dim=1), None  # [1, tokens, heads, head_dim], as sdpa_attention_forward returns


def use_rows_apart_sdpa():
    from transformers import AttentionInterface

    AttentionInterface.register("sdpa", rows_apart_sdpa)


class SftBatches:
    """The data collator: padded or padding-free batches. `logits`: which positions the model projects onto the
    vocabulary (its forward's logits_to_keep): "all" (the model's own loss), "none" (the chunked loss runs the
    output layer itself) or "trained" (only the positions whose next token is trained; tunewise.train.loss)."""

    def __init__(self, tokenizer, padding_free: bool, logits: str = "all"):
        from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening

        self.padding_free = padding_free
        self.logits = logits
        # the rows' boundaries: flash-attention's varlen and rows_apart_sdpa read them
        self.collate = (DataCollatorWithFlattening(separator_id=IGNORE, return_flash_attn_kwargs=True)
                        if padding_free
                        else DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE))

    def __call__(self, features: list[dict]) -> dict:
        from tunewise.train.loss import next_token_targets

        batch = self.collate(unpack(features) if self.padding_free else features)
        if self.padding_free:  # transformers finds the rows in position_ids only when no cache is built
            batch["use_cache"] = False
        if self.logits == "none":
            batch["logits_to_keep"] = torch.zeros(0, dtype=torch.long)
        elif self.logits == "trained":
            batch["logits_to_keep"] = next_token_targets(batch["labels"]) != IGNORE
        return batch


@torch.no_grad()
def keeps_rows_apart(model, rows: list[list[int]], atol: float = 1e-4) -> tuple[bool, float]:
    """(whether the model's outputs for `rows` in one padding-free batch, as SftBatches makes it, equal its outputs
    for each row alone, the largest difference): the check padding-free training relies on. Runs in eval mode (no
    dropout), without a cache (as the Trainer trains), on the model as it is before training."""
    batch = SftBatches(None, padding_free=True)([{"input_ids": r, "labels": r} for r in rows])
    del batch["labels"]
    was_training = model.training
    model.eval()
    try:
        alone = torch.cat([model(input_ids=torch.tensor([r]), use_cache=False).logits[0] for r in rows])
        packed = model(**batch).logits[0]
    finally:
        model.train(was_training)
    diff = (packed - alone).abs().max().item()
    return diff <= atol * max(1.0, alone.abs().max().item()), diff


def probe_rows(dataset, count: int = 3, length: int = 12) -> list[list[int]]:
    """A few short token sequences from the training rows, for keeps_rows_apart: the second and later rows would
    see the first if attention crossed rows."""
    rows = [list(dataset[i]["input_ids"][:length]) for i in range(min(count, len(dataset)))]
    while len(rows) < 2:  # one training row: the check still needs two sequences
        rows.append(list(reversed(rows[0])))
    return rows
