"""`tunewise export --adapters CKPT --merge_lora true`: a plain Hugging Face model directory from a LoRA run (the
merge itself is tunewise.models.merge)."""
from __future__ import annotations

from tunewise.args import ExportArgs
from tunewise.command import Command
from tunewise.models.merge import export


def run(args: ExportArgs, sources: dict, argv: list[str]) -> int:
    if args.quant_method == "bnb":
        from tunewise.export.bnb import export_bnb, summary

        out, record = export_bnb(args)
        print(summary(out, record))
        return 0
    out = export(args)
    print(f"merged model written to {out}")
    print(f"load it with: AutoModelForCausalLM.from_pretrained('{out}')  or  tunewise infer --model {out}")
    return 0


COMMAND = Command(ExportArgs, run)
