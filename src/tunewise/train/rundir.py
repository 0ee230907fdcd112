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
from typing import TYPE_CHECKING

from tunewise import ranks
from tunewise.errors import UserError
from tunewise.files import check_writable, listing, read_jsonl, write_text_atomic
from tunewise.models.checkpoint import checkpoints, holds_run
from tunewise.trees import remove_tree

if TYPE_CHECKING:
    from tunewise.plan.run import Run

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


def check_new_target(args) -> None:
    """check_run_target, once per run: by node 0's launching parent, or by global rank 0 (a resumed run writes
    into its own directory)."""
    from tunewise.train import launch

    made_elsewhere = launch.launched() or ranks.rank() != 0 or args.node_rank > 0
    if not args.resume_from_checkpoint and not made_elsewhere:
        check_run_target(args.output_dir, args.add_version, args.overwrite)


def discard(run_dir: Path) -> None:
    """A new run directory in which nothing was trained, taken away again (its lock released first)."""
    release_locks()
    remove_tree(run_dir)


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


def resume_target(run: Run) -> Path | None:
    """The checkpoint --resume_from_checkpoint names (or the newest, for 'latest'), checked to be complete and to
    have steps left: transformers would take one step past a finished run's last, off the planned schedule."""
    from tunewise.models.checkpoint import latest_checkpoint, trainer_state

    args = run.args
    if not args.resume_from_checkpoint:
        return None
    if args.resume_from_checkpoint == "latest":
        path = latest_checkpoint(args.output_dir)
    else:
        path = Path(args.resume_from_checkpoint)
        if not (path / "trainer_state.json").is_file():
            raise UserError(f"--resume_from_checkpoint {path}: not a checkpoint directory (no trainer_state.json).")
    state = trainer_state(path)
    if state is None:
        raise UserError(f"--resume_from_checkpoint {path}: its trainer_state.json cannot be read (cut short or "
                        "corrupt), so the checkpoint is not complete; resume from an earlier one.")
    done, total = state.get("global_step", 0), run.step_plan.total_steps
    if done >= total:
        raise UserError(f"--resume_from_checkpoint {path}: that checkpoint is at step {done} and the plan ends at "
                        f"step {total}, so nothing is left to train. To train further, start a new run from it "
                        f"(--adapters {path} for LoRA, --model {path} for a full fine-tune).")
    return path


def create_run_dir(run: Run) -> Path:
    """A new versioned run directory holding args.json and the plan files."""
    from tunewise.flags import to_json
    from tunewise.files import write_json_atomic
    from tunewise.plan.report import write_plan_files

    run_dir = new_run_dir(run.args.output_dir, run.args.add_version, run.args.overwrite)
    record = to_json(run.args, dict(run.sources), run.recipe.command)
    if run.recipe.rlhf_type:
        record["rlhf_type"] = run.recipe.rlhf_type
    record["model_path"] = str(Path(run.model_dir).resolve()) if Path(run.model_dir).exists() else run.model_dir
    write_json_atomic(run_dir / "args.json", record)
    write_plan_files(run_dir, run.step_plan, run.schedule, run.plan_record())
    return run_dir


def launch_run_dir(run: Run) -> Path:
    """The run directory a launching parent hands to its ranks: the resumed run's (locked here, for the whole
    launch) or a new one."""
    resume = resume_target(run)
    if resume is None:
        return create_run_dir(run)
    acquire_lock(resume.parent)
    return resume.parent


def open_run(run: Run) -> tuple[Path, Path | None, bool]:
    """(run directory, checkpoint to resume from or None, made here): either reuses (and locks) the resumed run's
    directory or makes a new one; with several processes global rank 0 decides and the others follow
    (launch.agree_on_run). A resumed run's log is cut back to its
    checkpoint only once the Trainer has loaded it (MetricsLog), so a failed resume changes nothing."""
    from tunewise.train import launch

    launched = launch.launched()

    def decide() -> tuple[Path, Path | None, bool]:
        resume = resume_target(run)
        if resume is not None:
            if not launched:  # a launching parent holds the lock
                acquire_lock(resume.parent)
            return resume.parent, resume, False
        return (Path(launched), None, False) if launched else (create_run_dir(run), None, True)

    run_dir, resume, created = launch.agree_on_run(decide)
    if ranks.is_main_process():
        if resume is None:  # a resumed run cleans up once its checkpoint has loaded (MetricsLog.on_train_begin)
            clear_staging(run_dir)
        print(f"run directory: {run_dir}", flush=True)
    return run_dir, resume, created


