"""`tunewise export --adapters CKPT --merge_lora true`: a plain Hugging Face model directory from a LoRA run.

The merged directory (weights, config, generation config, tokenizer, chat template) loads with
`AutoModelForCausalLM.from_pretrained` alone and answers like the adapter. It is written to a temporary folder
and renamed when complete.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from tunewise.args import ExportArgs
from tunewise.command import Command
from tunewise.errors import UserError


def export(args: ExportArgs) -> Path:
    from peft import PeftModel

    from tunewise.checkpoint import resolve
    from tunewise.models.load import load_model

    if not args.merge_lora:
        raise UserError("--merge_lora false: nothing to export; the checkpoint already is a peft adapter directory.")
    if len(args.adapters) != 1:
        raise UserError("--adapters: give the one LoRA checkpoint to merge.")
    spec = resolve(args.model, args.adapters)
    if spec.adapter is None:
        raise UserError(f"--adapters {args.adapters[0]}: a full checkpoint is already a plain model directory.")
    out = Path(args.output_dir) if args.output_dir else Path(str(Path(spec.adapter).resolve()) + "-merged")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)

    model = PeftModel.from_pretrained(load_model(spec.base, args.torch_dtype), spec.adapter)
    merged = model.merge_and_unload()
    merged.save_pretrained(tmp, safe_serialization=True)
    spec.load_tokenizer().save_pretrained(tmp)
    if out.exists():
        shutil.rmtree(out)
    os.rename(tmp, out)
    return out


def run(args: ExportArgs, sources: dict, argv: list[str]) -> int:
    out = export(args)
    print(f"merged model written to {out}")
    print(f"load it with: AutoModelForCausalLM.from_pretrained('{out}')  or  tunewise infer --model {out}")
    return 0


COMMAND = Command(ExportArgs, run)
