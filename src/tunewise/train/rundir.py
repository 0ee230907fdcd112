"""The run directory: `OUTPUT_DIR/vN-YYYYMMDD-HHMMSS/` with args.json, checkpoints, best/last links.

Checkpoints are never half-written: the Trainer saves into `.staging/checkpoint-N/`, and only once that folder is
complete (optimizer and trainer state included) is it renamed to `checkpoint-N/`, an atomic step on one file
system. A crash mid-save leaves only the staging folder, which the next run in that directory clears.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

from tunewise.errors import UserError
from tunewise.files import read_jsonl, write_text_atomic

STAGING = ".staging"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_VERSION = re.compile(r"^v(\d+)-")


def new_run_dir(output_dir: str, add_version: bool = True) -> Path:
    root = Path(output_dir)
    if not add_version:
        root.mkdir(parents=True, exist_ok=True)
        return root
    root.mkdir(parents=True, exist_ok=True)
    versions = [int(m.group(1)) for p in root.iterdir() if (m := _VERSION.match(p.name))]
    for attempt in range(100):
        version = max(versions, default=-1) + 1 + attempt
        path = root / f"v{version}-{time.strftime('%Y%m%d-%H%M%S')}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise UserError(f"{root}: could not create a new run directory.")


def checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest step first."""
    found = [(int(m.group(1)), p) for p in Path(run_dir).iterdir() if (m := _CHECKPOINT.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def step_of(checkpoint: Path) -> int:
    m = _CHECKPOINT.match(Path(checkpoint).name)
    return int(m.group(1)) if m else -1


def publish(staging_checkpoint: Path, run_dir: Path) -> Path:
    """Move a complete checkpoint from the staging folder into the run directory."""
    final = Path(run_dir) / Path(staging_checkpoint).name
    if final.exists():  # the same step saved again after a resume
        shutil.rmtree(final)
    os.rename(staging_checkpoint, final)
    return final


def clear_staging(run_dir: Path) -> None:
    shutil.rmtree(Path(run_dir) / STAGING, ignore_errors=True)


def _link(run_dir: Path, name: str, target: Path | None) -> None:
    link = Path(run_dir) / name
    if target is None:
        return
    tmp = Path(run_dir) / f".{name}.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(Path(target).name)
    os.replace(tmp, link)


def rotate(run_dir: Path, limit: int | None, best: Path | None) -> None:
    """Keep at most `limit` checkpoints, always the best and the last; point `best` and `last` at them."""
    cps = checkpoints(run_dir)
    last = cps[-1] if cps else None
    if limit is not None and limit > 0:
        keep = {p.name for p in cps[-limit:]}
        if best is not None:
            keep.add(Path(best).name)
            if len(keep) > limit:  # the best takes a slot from the oldest of the recent ones
                recent = [p.name for p in cps if p.name in keep and p.name != Path(best).name]
                keep.discard(recent[0])
        if last is not None:
            keep.add(last.name)
        for p in cps:
            if p.name not in keep:
                shutil.rmtree(p)
    _link(run_dir, "last", last)
    _link(run_dir, "best", best if best is not None and Path(best).exists() else last)


def latest_checkpoint(output_dir: str) -> Path:
    """The newest complete checkpoint under OUTPUT_DIR (searching its versioned runs)."""
    root = Path(output_dir)
    candidates = []
    if root.is_dir():
        for run in [root] + [p for p in root.iterdir() if p.is_dir()]:
            candidates += checkpoints(run)
    if not candidates:
        raise UserError(f"--resume_from_checkpoint latest: no checkpoint found under {root}.")
    return max(candidates, key=lambda p: p.stat().st_mtime)


def truncate_log(log: Path, after_step: int) -> None:
    """Drop logging.jsonl records past `after_step`: a resumed run logs those steps again."""
    log = Path(log)
    if not log.is_file():
        return
    kept = [record for record in read_jsonl(log) if record.get("step", 0) <= after_step]
    write_text_atomic(log, "".join(json.dumps(record) + "\n" for record in kept))
