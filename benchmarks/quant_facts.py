#!/usr/bin/env python3
"""What bitsandbytes does on this machine's CPU with the embedded model (benchmarks/QUANT.md records the results).

    HF_HUB_OFFLINE=1 PYTHONPATH=src .venv/bin/python benchmarks/quant_facts.py [--out facts.json]

1. load in nf4 / fp4 / nf4 + double quant / LLM.int8, forward: largest logits difference against float32, memory
   footprint; save_pretrained and load back, saved before any forward and after one (bitsandbytes' CPU repacking);
2. tunewise.export.bnb.write_bnb at 4 and 8 bits: its checks; and compare() on a file saved after a forward;
3. QLoRA: prepare_model_for_kbit_training + LoRA (all-linear, r 8), 10 AdamW steps on one batch, with and without
   an eval-mode forward first, with and without tunewise's for_training (the repacking off).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

MODEL = Path(__file__).resolve().parents[1] / "src/tunewise/models/builtin/tunewise-tiny"
VARIANTS = {"nf4": (4, "nf4", False), "fp4": (4, "fp4", False), "nf4+dq": (4, "nf4", True), "int8": (8, "", False)}


def config(name):
    from transformers import BitsAndBytesConfig

    bits, kind, dq = VARIANTS[name]
    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=kind, bnb_4bit_use_double_quant=dq,
                              bnb_4bit_compute_dtype=torch.float32)


def load_save(tok, tmp: Path) -> dict:
    from transformers import AutoModelForCausalLM

    ids = tok(["Who are you?", "What is 12 + 7?"], return_tensors="pt", padding=True)
    ref = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32)
    with torch.no_grad():
        r = ref(**ids).logits
    out = {"float32_footprint_bytes": ref.get_memory_footprint()}
    for name in VARIANTS:
        t = time.perf_counter()
        m = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32, quantization_config=config(name))
        load_s = time.perf_counter() - t
        m.save_pretrained(tmp / f"{name}-before")
        with torch.no_grad():
            q = m(**ids).logits
        m.save_pretrained(tmp / f"{name}-after")
        row = {"load_s": round(load_s, 3), "footprint_bytes": m.get_memory_footprint(),
               "max_abs_logits_diff_vs_float32": (q - r).abs().max().item(), "finite": bool(torch.isfinite(q).all())}
        for when in ("before", "after"):
            back = AutoModelForCausalLM.from_pretrained(tmp / f"{name}-{when}")
            with torch.no_grad():
                row[f"reload_saved_{when}_forward_max_abs_diff"] = (back(**ids).logits - q).abs().max().item()
        out[name] = row
    return out


def export_checks(tmp: Path) -> dict:
    from transformers import AutoModelForCausalLM

    from tunewise.errors import UserError
    from tunewise.export.bnb import compare, write_bnb
    from tunewise.models.load import load_model, load_tokenizer

    out = {}
    for bits in (4, 8):
        t = time.perf_counter()
        out[f"write_bnb_{bits}"] = write_bnb(MODEL, tmp / f"export{bits}", bits)
        out[f"write_bnb_{bits}"]["seconds"] = round(time.perf_counter() - t, 1)
    tok = load_tokenizer(str(MODEL))
    broken = tmp / "broken"
    m = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32, quantization_config=config("nf4"))
    with torch.no_grad():
        m(**tok(["hello"], return_tensors="pt"))
    m.save_pretrained(broken)
    try:
        compare(load_model(str(MODEL)).eval(), AutoModelForCausalLM.from_pretrained(broken).eval(), tok, 4)
        out["compare_on_file_saved_after_forward"] = "passed (NOT caught)"
    except UserError as e:
        out["compare_on_file_saved_after_forward"] = f"refused: {e}"
    return out


def qlora(tok) -> dict:
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    from tunewise.models.quantization import for_training

    batch = tok(["<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\nI am TinyWise.<|im_end|>"] * 4,
                return_tensors="pt")
    batch["labels"] = batch["input_ids"].clone()
    out = {}
    for name in ("float32", *VARIANTS):
        for eval_first, fix in ((False, False), (True, False), (True, True)):
            if name == "float32" and (eval_first or fix):
                continue
            torch.manual_seed(0)
            kw = {} if name == "float32" else {"quantization_config": config(name)}
            m = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32, **kw)
            if kw:
                m = for_training(m, False) if fix else prepare_model_for_kbit_training(m, use_gradient_checkpointing=False)
            m = get_peft_model(m, LoraConfig(r=8, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
            if eval_first:
                m.eval()
                with torch.no_grad():
                    m(**batch)
            m.train()
            opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3)
            key = f"{name}{' eval-first' if eval_first else ''}{' for_training' if fix else ''}"
            losses, t = [], time.perf_counter()
            try:
                for _ in range(10):
                    loss = m(**batch).loss
                    loss.backward()
                    opt.step()
                    opt.zero_grad()
                    losses.append(round(loss.item(), 4))
                out[key] = {"first_loss": losses[0], "last_loss": losses[-1],
                            "ms_per_step": round((time.perf_counter() - t) * 100, 1)}
            except Exception as e:
                out[key] = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=None)
    parser.add_argument("--parts", default="load,export,qlora")
    args = parser.parse_args()
    import bitsandbytes
    import peft
    import transformers
    from transformers import AutoTokenizer

    from tunewise.models.quantization import backend_problem

    tok = AutoTokenizer.from_pretrained(MODEL)
    facts = {"versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                          "peft": peft.__version__, "bitsandbytes": bitsandbytes.__version__},
             "backend_problem": {bits: backend_problem(bits, "cpu") for bits in (4, 8)}}
    with tempfile.TemporaryDirectory() as tmp:
        parts = args.parts.split(",")
        if "load" in parts:
            facts["load_save"] = load_save(tok, Path(tmp))
        if "export" in parts:
            facts["export"] = export_checks(Path(tmp))
        if "qlora" in parts:
            facts["qlora"] = qlora(tok)
    text = json.dumps(facts, indent=1, ensure_ascii=False, default=str)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
