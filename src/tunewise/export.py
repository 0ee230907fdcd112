"""`tunewise export --adapters CKPT --merge_lora true`: a plain Hugging Face model directory from a LoRA run.

The merged directory (weights, config, generation config, tokenizer, chat template) loads with
`AutoModelForCausalLM.from_pretrained` alone and answers like the adapter. It is written to a temporary folder
and renamed when complete.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from tunewise.args import ExportArgs, help_text, parse
from tunewise.errors import UserError


def export(args: ExportArgs) -> Path:
    from peft import PeftModel

    from tunewise.infer.engine import resolve_spec
    from tunewise.models.load import load_model, load_tokenizer

    if not args.merge_lora:
        raise UserError("--merge_lora false: nothing to export; the checkpoint already is a peft adapter directory.")
    if len(args.adapters) != 1:
        raise UserError("--adapters: give the one LoRA checkpoint to merge.")
    spec = resolve_spec(args.model, args.adapters)
    if spec.adapter is None:
        raise UserError(f"--adapters {args.adapters[0]}: a full checkpoint is already a plain model directory.")
    out = Path(args.output_dir) if args.output_dir else Path(str(Path(spec.adapter).resolve()) + "-merged")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)

    model = PeftModel.from_pretrained(load_model(spec.base, args.torch_dtype), spec.adapter)
    merged = model.merge_and_unload()
    merged.save_pretrained(tmp, safe_serialization=True)
    tok_dir = spec.adapter if (Path(spec.adapter) / "tokenizer_config.json").is_file() else spec.base
    load_tokenizer(tok_dir).save_pretrained(tmp)
    if out.exists():
        shutil.rmtree(out)
    os.rename(tmp, out)
    return out


def main(argv: list[str]) -> int:
    if "-h" in argv or "--help" in argv:
        print(help_text(ExportArgs, "export"))
        return 0
    args, _, _ = parse(ExportArgs, argv)
    out = export(args)
    print(f"merged model written to {out}")
    print(f"load it with: AutoModelForCausalLM.from_pretrained('{out}')  or  tunewise infer --model {out}")
    return 0
