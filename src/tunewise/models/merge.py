"""A LoRA checkpoint merged into a plain Hugging Face model directory (`tunewise export`, and `tunewise serve
--engine vllm` for a single adapter), and the staging every export is written through.

The merged directory (weights, config, generation config, tokenizer, chat template) loads with
`AutoModelForCausalLM.from_pretrained` alone and answers like the adapter. It is written to a temporary folder
and renamed when complete (`staged_folder`); `finish(folder, final_path, checkpoint)`, when given, checks the
folder and adds to it first (tunewise.export: the comparison with the adapter and export.json), so a failed check
publishes nothing.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from tunewise.args import ExportArgs
from tunewise.errors import UserError
from tunewise.trees import remove_tree


def merge_source(args: ExportArgs):
    """The checkpoint a merged export is made of (tunewise.models.checkpoint.Checkpoint), after the checks."""
    from tunewise.models.checkpoint import open_checkpoint

    if not args.merge_lora:
        raise UserError("--merge_lora false: nothing to export; the checkpoint already is a peft adapter directory.")
    if len(args.adapters) != 1:
        raise UserError("--adapters: give the one LoRA checkpoint to merge.")
    spec = open_checkpoint(args.model, args.adapters)
    if spec.adapter is None:
        raise UserError(f"--adapters {args.adapters[0]}: a full checkpoint is already a plain model directory.")
    return spec


def export(args: ExportArgs, finish: Callable[[Path, Path, object], None] | None = None) -> Path:
    from tunewise.models.checkpoint import load

    spec = merge_source(args)
    out = Path(args.output_dir) if args.output_dir else Path(str(Path(spec.adapter).resolve()) + "-merged")
    check_target(out, Path(spec.adapter), args.overwrite)
    with staged_folder(out) as tmp:
        merged = load(spec, args.torch_dtype, adapter="merged")
        merged.save_pretrained(tmp, safe_serialization=True)
        spec.load_tokenizer().save_pretrained(tmp)
        del merged
        if finish is not None:
            finish(tmp, out, spec)
    return out


@contextlib.contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """A temporary folder beside `out` to write into; renamed to `out` when the block completes (an `out` already
    there, which check_target allowed, goes only then), removed when it fails."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield tmp
        tmp.chmod(0o755)  # mkdtemp's 0700 would stay on the published folder
        if out.exists():  # --overwrite true: the old export goes only once the new one is complete
            remove_tree(out)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_target(out: Path, checkpoint: Path, overwrite: bool) -> None:
    """The export never replaces the checkpoint it reads, the run around it, or any other training run; anything
    else already at --output_dir only with --overwrite true."""
    from tunewise.files import check_writable
    from tunewise.models.checkpoint import holds_run

    check_writable(out)
    target, source = out.resolve(), checkpoint.resolve()
    if target == source or target in source.parents or source in target.parents:
        raise UserError(f"--output_dir {out}: that is the checkpoint being exported, a folder around it or a folder "
                        f"inside it ({source}); write the export elsewhere (default: CHECKPOINT-merged beside it).")
    if not out.exists():
        return
    if holds_run(out):
        raise UserError(f"--output_dir {out} holds a training run; write the export elsewhere.")
    if not overwrite:
        raise UserError(f"--output_dir {out} already exists; choose another folder or pass --overwrite true to "
                        "replace it.")
