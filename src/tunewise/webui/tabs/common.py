"""What the tabs share: the checkpoints on offer, and following a subprocess to its end in a streaming handler."""
from __future__ import annotations

import time
from pathlib import Path

from tunewise.models.checkpoint import find_checkpoints


def checkpoint_choices(output_dir: str) -> list[str]:
    """LoRA checkpoints under the web UI's --output_dir, newest first."""
    return [str(p) for p in find_checkpoints(Path(output_dir))]


def follow(job, command: str, argv: list[str], every: float = 1.0, lines: int = 200):
    """Start `tunewise COMMAND ARGV` and yield (status, log) while it runs and once when it has ended; a start that
    failed (another run going, no executable) yields its message once."""
    message = job.start(command, argv)
    if not message.startswith("started"):
        yield message, job.log_text(lines) if job.proc else ""
        return
    yield message, job.log_text(lines)
    while job.running:
        time.sleep(every)
        yield job.status(), job.log_text(lines)
    yield job.status(), job.log_text(lines)
