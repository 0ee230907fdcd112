"""`tunewise export --quant_method bnb --quant_bits 4|8`: the model (a LoRA checkpoint merged first, or --model
alone) handed to tunewise.export.bnb.write_bnb, which writes the bitsandbytes model into the staging folder and
returns its checks; export.json is added and the folder published as every export is."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from tunewise.args import ExportArgs
from tunewise.errors import UserError


def export_bnb(args: ExportArgs) -> dict:
    from tunewise.export.gguf_export import gguf_source
    from tunewise.export.report import how_to_run, write_export_json
    from tunewise.models.checkpoint import load
    from tunewise.models.merge import check_target, staged_folder

    try:
        from tunewise.export.bnb import write_bnb
    except ImportError as e:
        raise UserError(f"--quant_method bnb: its writer cannot be imported ({e}).") from e
    spec = gguf_source(args)
    label = spec.adapter or spec.base_name
    default = Path(str(Path(spec.adapter or spec.base).resolve()) + f"-bnb-{args.quant_bits}bit")
    out = Path(args.output_dir) if args.output_dir else default
    check_target(out, Path(spec.adapter or spec.base), args.overwrite)
    scratch = None
    try:
        model_dir = Path(spec.base)
        if spec.adapter:  # write_bnb quantizes a plain model directory: the merge goes to a scratch folder first
            scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.merged.", dir=out.parent if out.parent.is_dir()
                                            else None))
            merged = load(spec, args.torch_dtype, adapter="merged")
            merged.save_pretrained(scratch, safe_serialization=True)
            spec.load_tokenizer().save_pretrained(scratch)
            del merged
            model_dir = scratch
        with staged_folder(out) as tmp:
            checks = write_bnb(model_dir, tmp, args.quant_bits)
            summary = {"kind": "bnb", "output_dir": str(out), "compared": ["source", "bnb"],
                       "source": {"base": spec.base_name, "adapter": spec.adapter, "system": spec.system},
                       "quant_bits": args.quant_bits, "checks": checks, "run": how_to_run("bnb", out, label)}
            write_export_json(tmp, summary)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return summary
