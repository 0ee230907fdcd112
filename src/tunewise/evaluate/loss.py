"""Assistant-token loss and perplexity of a model on a conversation set (the training template and labels)."""
from __future__ import annotations

import math


def dataset_loss(model, tokenizer, rows: list[dict], batch_size: int = 8) -> dict:
    """Mean cross-entropy per assistant token over encoded rows {input_ids, labels} (tunewise.data.encode), and
    its exponential, the perplexity."""
    import torch

    from tunewise.data.encode import IGNORE

    total, count = 0.0, 0
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        width = max(len(r["input_ids"]) for r in chunk)
        ids = torch.tensor([r["input_ids"] + [pad] * (width - len(r["input_ids"])) for r in chunk])
        labels = torch.tensor([r["labels"] + [IGNORE] * (width - len(r["labels"])) for r in chunk])
        mask = torch.tensor([[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in chunk])
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        targets = labels[:, 1:]
        keep = targets != IGNORE
        total += torch.nn.functional.cross_entropy(logits[keep], targets[keep], reduction="sum").item()
        count += int(keep.sum())
    if not count:
        return {"loss": None, "perplexity": None, "loss_tokens": 0}
    loss = total / count
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "loss_tokens": count}
