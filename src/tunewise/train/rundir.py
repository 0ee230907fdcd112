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
from tunewise.files import check_writable, listing, read_jsonl, write_text_atomic
from tunewise.models.checkpoint import checkpoints, holds_run
from tunewise.trees import TRASH, clear_trash, remove_tree  # noqa: F401 (train/ calls rundir.clear_trash)

STAGING = ".staging"
LOCK = ".tunewise.lock"
_VERSION = re.compile(r"^v(\d+)-")


def check_run_target(output_dir: str, add_version: bool, overwrite: bool) -> None:
    """Refuse, before anything is written, a run that would write into a folder that already holds files (a run
    with --add_version false, or anything else) unless --overwrite true says to replace them."""
    root = Path(output_dir).expanduser()
    check_writable(root)
    if add_version or overwrite or not root.is_dir():
        return
    shown = listing(root)
    if shown:
        what = "a run" if holds_run(root) else "files"
        raise UserError(f"--output_dir {root} already holds {what} ({shown}) and --add_version false would write into "
                        "it. Choose a new folder, drop --add_version false (each run then gets its own vN-... folder), "
                        "resume it with --resume_from_checkpoint, or pass --overwrite true to replace what is there.")


def new_run_dir(output_dir: str, add_version: bool = True, overwrite: bool = False) -> Path:
    root = Path(output_dir)
    try:
        return _new_run_dir(root, add_version, overwrite)
    except OSError as e:
        raise UserError(f"--output_dir {root}: cannot create the run directory ({e.strerror}).") from e


def _new_run_dir(root: Path, add_version: bool, overwrite: bool) -> Path:
    if not add_version:
        check_run_target(str(root), add_version, overwrite)
        root.mkdir(parents=True, exist_ok=True)
        acquire_lock(root)  # before anything is replaced: a second run into the same folder stops here
        if overwrite:  # asked for in words: the old contents go, each folder renamed away first
            for p in root.iterdir():
                if p.name != LOCK:
                    remove_tree(p)
        return root
    root.mkdir(parents=True, exist_ok=True)
    versions = [int(m.group(1)) for p in root.iterdir() if (m := _VERSION.match(p.name))]
    for attempt in range(100):
        version = max(versions, default=-1) + 1 + attempt
        path = root / f"v{version}-{time.strftime('%Y%m%d-%H%M%S')}"
        try:
            path.mkdir()
        except FileExistsError:
            continue
        acquire_lock(path)
        return path
    raise UserError(f"{root}: could not create a new run directory.")


_held_locks: list[Path] = []


def acquire_lock(run_dir: Path) -> None:
    """Hold RUN_DIR/.tunewise.lock (host and pid) while this process writes the run: a second run into the same
    folder is refused. A lock left by a killed process on this host is taken over."""
    import socket

    lock, mine = Path(run_dir) / LOCK, f"{socket.gethostname()} {os.getpid()}"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            holder = lock.read_text(encoding="utf-8", errors="replace").strip() if lock.is_file() else ""
            host, _, pid = holder.partition(" ")
            if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
                lock.unlink(missing_ok=True)  # its process is gone (killed): the run is free
                continue
            raise UserError(f"{run_dir} is in use by another tunewise run (host and pid: {holder or 'unknown'}); wait "
                            f"for it to end or choose another --output_dir (if that process is gone, delete {lock}).")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(mine)
        if not _held_locks:
            import atexit

            atexit.register(release_locks)
        _held_locks.append(lock)
        return
    raise UserError(f"{run_dir}: could not take its lock file {lock}.")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def release_locks() -> None:
    while _held_locks:
        _held_locks.pop().unlink(missing_ok=True)


def publish(staging_checkpoint: Path, run_dir: Path) -> Path:
    """Move a complete checkpoint from the staging folder into the run directory."""
    final = Path(run_dir) / Path(staging_checkpoint).name
    if final.exists():  # the same step saved again after a resume
        remove_tree(final)
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
                remove_tree(p)
    _link(run_dir, "last", last)
    _link(run_dir, "best", best if best is not None and Path(best).exists() else last)


def truncate_log(log: Path, after_step: int) -> int:
    """Drop logging.jsonl records past `after_step` (a resumed run logs those steps again) and lines that are not
    whole JSON records; returns how many of the latter there were."""
    log = Path(log)
    if not log.is_file():
        return 0
    lines = [line for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    records = read_jsonl(log)
    kept = [record for record in records if record.get("step", 0) <= after_step]
    write_text_atomic(log, "".join(json.dumps(record) + "\n" for record in kept))
    return len(lines) - len(records)
