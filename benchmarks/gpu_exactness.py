#!/usr/bin/env python3
"""Every fast path tunewise may choose on this device gives the model's own loss and gradients (gpu.sh runs it first).

    PYTHONPATH=src .venv/bin/python benchmarks/gpu_exactness.py      # CUDA when visible, else the CPU

On the embedded model (LoRA, 4 rows of different lengths, padding-free), against the padded batch with the model's
own loss and transformers' SDPA, in the device's training dtype (CUDA: bfloat16, CPU: float32):
  attention: per-row SDPA; torch's varlen flash kernel (CUDA); flash-attn's varlen (when installed)
  loss: 64 MiB recomputed chunks; trained positions in one pass (the GPU path); Liger's fused loss (when installed)
Prints one row per path (loss relative difference, worst gradient difference over the largest gradient) and exits
1 when one is over its bound (BOUNDS: float32 as tests/train/test_batches.py; bfloat16 between two valid bf16
computations and a broken kernel). A path this machine cannot run is listed as skipped with the reason.
"""
from __future__ import annotations

import copy
import importlib.util
import sys

import torch

from tunewise.data.encode import encode_conversation
from tunewise.models.load import load_model, load_tokenizer, resolve_model
from tunewise.train.batches import SftBatches, torch_varlen_kernel, use_packed_attention
from tunewise.train.loss import TrainedTokenLoss

CHATS = [("你是谁？", "我是小黄，一个由魔搭训练的人工智能助手。"), ("12+34=?", "12+34=46"),
         ("Who are you?", "I am Xiao Huang, an AI assistant developed by ModelScope."), ("Say hi", "hi")]
# (loss relative difference, gradient difference): float32 the worst entry over the largest gradient, bfloat16 the
# relative L2 norm. Measured in bf16 on a CPU (2026-12-04): per-row SDPA against the padded batch 6.7e-4 / 0.10 (two
# valid orders of bf16 arithmetic), a kernel that forgets causality 8.2e-2 / 2.06: the bounds sit between.
BOUNDS = {torch.float32: (3e-6, 1e-4), torch.bfloat16: (1e-2, 0.4)}


def lora_model(path, dtype, device, attn_impl=None):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(load_model(path, str(dtype).replace("torch.", ""), attn_impl),
                           LoraConfig(r=8, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear"))
    for name, param in model.named_parameters():
        if "lora_B" in name:  # B starts at zero: give it values so A gets gradients too
            torch.nn.init.normal_(param, std=0.02)
    model.config.use_cache = False
    return model.to(device).train()


def loss_and_grads(model, batch, loss_func, num_items):
    model.zero_grad()
    batch = {k: v.to(next(model.parameters()).device) if torch.is_tensor(v) else v for k, v in batch.items()}
    if loss_func is None:
        loss = model(**batch, num_items_in_batch=num_items).loss
    else:
        labels = batch.pop("labels")
        loss = loss_func(model(**batch), labels, num_items_in_batch=num_items)
    loss.backward()
    return loss.item(), {n: p.grad.float().clone() for n, p in model.named_parameters() if p.grad is not None}


def compare(name, result, reference, dtype) -> dict:
    loss_bound, grad_bound = BOUNDS[dtype]
    scale = max(g.abs().max().item() for g in reference[1].values())
    worst = max((result[1][n] - g).abs().max().item() for n, g in reference[1].items())
    norm = sum(g.pow(2).sum().item() for g in reference[1].values()) ** 0.5
    l2 = sum((result[1][n] - g).pow(2).sum().item() for n, g in reference[1].items()) ** 0.5 / norm
    loss_rel = abs(result[0] - reference[0]) / abs(reference[0])
    # float32: the worst entry; bf16: the whole gradient's relative L2 (single entries round by whole bf16 steps)
    ok = loss_rel <= loss_bound and (worst <= grad_bound * scale if dtype == torch.float32 else l2 <= grad_bound)
    return {"path": name, "loss_rel": loss_rel, "grad_rel": worst / scale, "grad_l2": l2, "ok": ok}


def main() -> int:
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    cuda = torch.cuda.is_available()
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    path = str(resolve_model("tunewise-tiny"))
    tok = load_tokenizer(path)
    rows = []
    for q, a in CHATS:
        ids, labels = encode_conversation(tok, [{"role": "user", "content": q}, {"role": "assistant", "content": a}])
        rows.append({"input_ids": ids, "labels": labels})
    num_items = torch.tensor(sum(sum(1 for x in r["labels"][1:] if x != -100) for r in rows), device=device)
    model = lora_model(path, dtype, device)
    AttentionInterface.register("sdpa", sdpa_attention_forward)
    reference = loss_and_grads(model, SftBatches(tok, False)(rows), None, num_items)
    packed = lambda logits="all": SftBatches(tok, True, logits=logits)(rows)  # noqa: E731
    table, skipped = [], []

    use_packed_attention()  # per-row SDPA on every device
    table.append(compare("attention: per-row SDPA", loss_and_grads(model, packed(), None, num_items), reference, dtype))
    if cuda and torch_varlen_kernel() is not None:
        use_packed_attention(torch_varlen_kernel())
        table.append(compare("attention: torch varlen flash", loss_and_grads(model, packed(), None, num_items),
                             reference, dtype))
    else:
        skipped.append(("attention: torch varlen flash", "needs CUDA and torch >= 2.10"))
    if cuda and importlib.util.find_spec("flash_attn"):
        flash = lora_model(path, dtype, device, "flash_attention_2")
        table.append(compare("attention: flash-attn varlen", loss_and_grads(flash, packed(), None, num_items),
                             reference, dtype))
    else:
        skipped.append(("attention: flash-attn varlen", "needs CUDA and flash-attn"))
    use_packed_attention()
    chunks = TrainedTokenLoss(model, chunk_bytes=4 * model.config.vocab_size * 7)  # 7 positions a chunk
    table.append(compare("loss: recomputed chunks", loss_and_grads(model, packed("none"), chunks, num_items),
                         reference, dtype))
    chunks.hook.remove()
    one_pass = TrainedTokenLoss(model, chunk_bytes=None if cuda else 1 << 30, recompute=False)
    table.append(compare("loss: trained positions, one pass", loss_and_grads(model, packed("none"), one_pass,
                                                                           num_items), reference, dtype))
    one_pass.hook.remove()
    if cuda and importlib.util.find_spec("liger_kernel"):
        from liger_kernel.transformers import _apply_liger_kernel_to_instance

        fused = copy.deepcopy(model)
        _apply_liger_kernel_to_instance(model=fused.get_base_model())
        table.append(compare("loss: Liger fused linear cross-entropy", loss_and_grads(fused, packed(), None,
                                                                                     num_items), reference, dtype))
    else:
        skipped.append(("loss: Liger fused linear cross-entropy", "needs CUDA and liger-kernel"))

    print(f"exactness on {torch.cuda.get_device_name() if cuda else 'CPU'}, {str(dtype)[6:]}, against the padded "
          f"batch with the model's own loss (loss {reference[0]:.6g}); bounds {BOUNDS[dtype]}")
    print("| path | loss rel. diff | worst grad / largest grad | grad rel. L2 | within bound |\n|---|---|---|---|---|")
    for row in table:
        print(f"| {row['path']} | {row['loss_rel']:.2e} | {row['grad_rel']:.2e} | {row['grad_l2']:.2e} | "
              f"{'yes' if row['ok'] else 'NO'} |")
    for name, why in skipped:
        print(f"| {name} | skipped: {why} | | | |")
    return 0 if all(row["ok"] for row in table) else 1


if __name__ == "__main__":
    sys.exit(main())
