"""`tunewise export --adapters CKPT`: the merged model (tunewise.models.merge), compared with the adapter it was
made of (attached, not merged) before it is published, with export.json."""
from __future__ import annotations

from pathlib import Path

from tunewise.args import ExportArgs

PPL_BOUND = 1.01  # merging in the same dtype changes nothing but rounding


def export_merged(args: ExportArgs) -> dict:
    from tunewise.export.checks import Side, compare, encoding_check, heldout_conversations, measure
    from tunewise.export.report import how_to_run, write_export_json
    from tunewise.models.checkpoint import load
    from tunewise.models.load import load_model, load_tokenizer
    from tunewise.models.merge import export

    conversations = heldout_conversations(args.dataset)
    summary: dict = {}

    def finish(tmp: Path, out: Path, spec) -> None:
        source_tokenizer, merged_tokenizer = spec.load_tokenizer(), load_tokenizer(str(tmp))
        adapter = measure(Side(load(spec, args.torch_dtype).eval(), source_tokenizer), spec.system, conversations)
        merged = measure(Side(load_model(str(tmp), args.torch_dtype).eval(), merged_tokenizer), spec.system,
                         conversations)
        encoding = encoding_check(source_tokenizer, merged_tokenizer, spec.system, conversations)
        checks = compare(("adapter", "merged"), adapter, merged, encoding, PPL_BOUND, len(conversations))
        summary.update({
            "kind": "merged", "output_dir": str(out), "compared": ["adapter", "merged"],
            "source": {"base": spec.base_name, "adapter": spec.adapter, "system": spec.system},
            "torch_dtype": args.torch_dtype, "checks": checks, "run": how_to_run("merged", out, spec.label),
        })
        write_export_json(tmp, summary)

    export(args, finish)
    return summary
