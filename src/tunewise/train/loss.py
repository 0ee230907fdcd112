"""--chunked_loss: the SFT loss with the output layer applied only where a label is trained, a chunk at a time.

A causal LM's own loss projects every position of the batch onto the vocabulary and keeps that [tokens x vocab]
fp32 tensor (and its log-softmax, and their gradients) alive through the backward pass: 2.4 GB for 4 rows of 1,000
tokens with Qwen's 151,936-token vocabulary, several times the weights of a 0.5B model's layers. Only positions whose
next token is trained (the assistant replies, a third to two thirds of the tokens) contribute to the loss, so:

- the collator asks the model for no logits at all (`logits_to_keep` = no positions, tunewise.train.batches);
- a forward hook on the model's decoder keeps its last hidden state (after the final norm);
- the loss gathers the trained positions and runs output layer + cross-entropy over them in chunks of a bounded
  size, each under activation checkpointing, so a chunk's logits exist only while that chunk is computed (forward,
  and again in the backward pass).

Engines that shard the output layer's weight (DeepSpeed ZeRO-3, FSDP) hold it whole only inside the model's own
forward: a chunk recomputed in the backward pass would find it partitioned (ZeRO-3 fails the recomputation check,
FSDP2 crashes). With them (`inside=True`) the model computes the logits itself, at the trained positions only
(`logits_to_keep` = the trained positions' mask), and the loss takes those: the logits of the trained tokens exist,
those of the others never do.

On a GPU (`chunk_bytes=None`) the chunk is sized at the first step from the memory the device has free, so the
trained positions usually fit one chunk: then the output layer and the loss run once, without recomputation (the
CPU's 64 MiB chunks, each recomputed in the backward pass, halved an H200's throughput: many small launches).

The result is the model's own loss (sum of token losses over the trained tokens, divided by the number of trained
tokens of the whole accumulated batch, `num_items_in_batch`, as transformers' ForCausalLMLoss), in another order of
summation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from tunewise.data.encode import IGNORE
from tunewise.plan.memory import LOSS_CHUNK_BYTES as CHUNK_BYTES  # 110 positions for Qwen's vocabulary

GPU_LOSS_SHARE = 0.5  # of the GPU memory free at the first step, what one chunk of the loss may take
BYTES_PER_LOGIT = 16  # a chunk's logits in the head's dtype, their float32 copy and log-probs, and the gradients


def next_token_targets(labels: torch.Tensor) -> torch.Tensor:
    """What each position predicts: the next label (IGNORE after the last), as ForCausalLMLoss shifts them."""
    return F.pad(labels, (0, 1), value=IGNORE)[..., 1:]


class TrainedTokenLoss:
    """A `compute_loss_func` for transformers.Trainer; `model` is the model before the Trainer wraps it (a peft
    model or a transformers one). `inside`: the model computes the trained positions' logits (sharded engines)."""

    def __init__(self, model, chunk_bytes: int | None = CHUNK_BYTES, inside: bool = False, recompute: bool = True):
        """chunk_bytes: one chunk's float32 logits, or None: sized from the GPU's free memory at the first step.
        recompute: every chunk is recomputed in the backward pass (CPU); False: only when the trained positions
        need more than one chunk (GPU)."""
        self.inside = inside
        self.hidden = None
        if inside:
            return
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.head = base.get_output_embeddings()
        self.vocab = base.config.get_text_config().vocab_size
        self.chunk = max(1, chunk_bytes // (4 * self.vocab)) if chunk_bytes else None
        self.recompute = recompute
        self.hook = base.get_decoder().register_forward_hook(self.keep_hidden)

    def gpu_chunk(self, device) -> int:
        """Positions per chunk from the memory `device` has free now (the driver's free memory plus what torch's
        caching allocator holds unused)."""
        free, _ = torch.cuda.mem_get_info(device)
        free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return max(1, int(free * GPU_LOSS_SHARE) // (BYTES_PER_LOGIT * self.vocab))

    def keep_hidden(self, module, args, output):
        self.hidden = output[0]  # BaseModelOutputWithPast.last_hidden_state, or a tuple's first element

    def chunk_loss(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.head(hidden).float(), targets, reduction="sum")

    def summed(self, outputs, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(sum of the trained tokens' losses, their number)."""
        targets = next_token_targets(labels)
        if self.inside:  # logits [trained positions, vocab], in the mask's order
            targets = targets[targets != IGNORE].to(outputs.logits.device)
            logits = outputs.logits.reshape(-1, outputs.logits.shape[-1])
            return F.cross_entropy(logits.float(), targets, reduction="sum"), len(targets)
        hidden, self.hidden = self.hidden, None
        if hidden is None:
            raise RuntimeError("chunked loss: the model's decoder did not run in this forward pass")
        targets = targets.to(hidden.device)
        trained = targets != IGNORE
        states, targets = hidden[trained], targets[trained]
        if self.chunk is None:
            self.chunk = self.gpu_chunk(hidden.device)
        if not self.recompute and len(targets) <= self.chunk:  # one launch of the head and the loss
            return self.chunk_loss(states, targets) + states.sum() * 0.0, len(targets)
        total = states.sum() * 0.0  # a batch with nothing to train still gives a loss with a graph, as the model's
        for start in range(0, len(targets), self.chunk):
            end = start + self.chunk
            total = total + checkpoint(self.chunk_loss, states[start:end], targets[start:end], use_reentrant=False)
        return total, len(targets)

    def __call__(self, outputs, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
        total, count = self.summed(outputs, labels)
        if num_items_in_batch is None:  # evaluation: the mean over this batch's trained tokens
            return total / max(count, 1)
        return total / num_items_in_batch


def loss_function(model, path: str) -> TrainedTokenLoss | None:
    """The Trainer's compute_loss_func for a loss path (tunewise.models.device): None where the model computes the
    loss itself (its own, or Liger's fused one patched into it)."""
    if path == "inside":
        return TrainedTokenLoss(model, inside=True)
    if path == "chunks":  # CPU: 64 MiB chunks, each recomputed in the backward pass
        return TrainedTokenLoss(model)
    if path == "trained":  # GPU: sized from free memory, recomputed only when more than one chunk is needed
        return TrainedTokenLoss(model, chunk_bytes=None, recompute=False)
    return None
