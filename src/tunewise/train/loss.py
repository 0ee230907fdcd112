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

The result is the model's own loss (sum of token losses over the trained tokens, divided by the number of trained
tokens of the whole accumulated batch, `num_items_in_batch`, as transformers' ForCausalLMLoss), in another order of
summation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from tunewise.data.encode import IGNORE
from tunewise.memory import LOSS_CHUNK_BYTES as CHUNK_BYTES  # 110 positions for Qwen's vocabulary


def next_token_targets(labels: torch.Tensor) -> torch.Tensor:
    """What each position predicts: the next label (IGNORE after the last), as ForCausalLMLoss shifts them."""
    return F.pad(labels, (0, 1), value=IGNORE)[..., 1:]


class TrainedTokenLoss:
    """A `compute_loss_func` for transformers.Trainer; `model` is the model before the Trainer wraps it (a peft
    model or a transformers one). `inside`: the model computes the trained positions' logits (sharded engines)."""

    def __init__(self, model, chunk_bytes: int = CHUNK_BYTES, inside: bool = False):
        self.inside = inside
        self.hidden = None
        if inside:
            return
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.head = base.get_output_embeddings()
        self.chunk = max(1, chunk_bytes // (4 * base.config.get_text_config().vocab_size))
        self.hook = base.get_decoder().register_forward_hook(self.keep_hidden)

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
