"""`tunewise export`: a checkpoint or model written for the tools that run it, each export read back and compared
with the model it came from before it is published, and described in OUTPUT/export.json (also printed).

  tunewise export --adapters CKPT [--merge_lora true]                                 # CKPT-merged/: a plain HF dir
  tunewise export --adapters CKPT --quant_method gguf --gguf_type q4_k_m --to_ollama true  # GGUF + Modelfile
  tunewise export --model M --quant_method gguf --gguf_type f16                       # a plain model as GGUF
  tunewise export --adapters CKPT --quant_method bnb --quant_bits 4                   # bitsandbytes (export/bnb.py)

The merge itself is tunewise.models.merge; the GGUF writer gguf_file.py (types: ggml_quants.py), its read-back
gguf_readback.py, the Modelfile ollama.py, the comparison checks.py, export.json and the printed summary report.py.
"""
from __future__ import annotations

from tunewise.args import ExportArgs
from tunewise.command import Command


def run(args: ExportArgs, sources: dict, argv: list[str]) -> int:
    from tunewise.export.report import print_summary

    if args.quant_method == "gguf":
        from tunewise.export.gguf_export import export_gguf

        summary = export_gguf(args)
    elif args.quant_method == "bnb":
        from tunewise.export.bnb_export import export_bnb

        summary = export_bnb(args)
    else:
        from tunewise.export.merged import export_merged

        summary = export_merged(args)
    print_summary(summary)
    return 0


COMMAND = Command(ExportArgs, run)
