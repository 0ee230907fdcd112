"""Deleting a folder so that a kill midway never leaves half of it under its own name (a run's rotated checkpoints,
a replaced export, an overwritten output folder)."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

TRASH = ".deleting-"  # remove_tree's hidden names


def remove_tree(path: Path) -> None:
    """Delete a folder so that a kill midway never leaves a half of it under its own name: it is renamed to a
    hidden name first (which no reader lists), then removed. A file or a link is simply unlinked."""
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        path.unlink()
        return
    trash = path.with_name(f"{TRASH}{path.name}-{os.getpid()}-{time.time_ns()}")
    os.rename(path, trash)
    shutil.rmtree(trash)


def clear_trash(folder: Path) -> None:
    """Remove what a killed remove_tree left behind."""
    for p in Path(folder).glob(f"{TRASH}*"):
        shutil.rmtree(p, ignore_errors=True)
