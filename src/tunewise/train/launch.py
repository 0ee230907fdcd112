"""Multi-process training: `--nproc_per_node N` (and multi-node flags) re-run the same command under torchrun.

The parent process checks the flags and the data and makes the plan first, so that bad input fails once, with
exit code 2 and no launcher traceback; then it creates the run directory and hands it to every rank through
TUNEWISE_RUN_DIR. A run started by the user's own `torchrun ... -m tunewise.cli sft ...` agrees on one run
directory through a marker file written by rank 0.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tunewise.errors import UserError
from tunewise.files import write_text_atomic

RUN_DIR_ENV = "TUNEWISE_RUN_DIR"
LAUNCH_FLAGS = ("nproc_per_node", "nnodes", "node_rank", "master_addr", "master_port")


def under_launcher() -> bool:
    return "LOCAL_RANK" in os.environ


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def wants_launch(args) -> bool:
    return not under_launcher() and (args.nproc_per_node > 1 or args.nnodes > 1)


def strip_launch_flags(argv: list[str]) -> list[str]:
    """argv without --nproc_per_node and the multi-node flags (the children must not launch again)."""
    out, skip = [], False
    for token in argv:
        if token.startswith("--"):
            name = token[2:].split("=", 1)[0].replace("-", "_")
            skip = name in LAUNCH_FLAGS and "=" not in token
            if name in LAUNCH_FLAGS:
                continue
        elif skip:
            skip = False
            continue
        out.append(token)
    return out


def torchrun_command(args, argv: list[str], command: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run",
            f"--nproc_per_node={args.nproc_per_node}", f"--nnodes={args.nnodes}", f"--node_rank={args.node_rank}",
            f"--master_addr={args.master_addr}", f"--master_port={args.master_port}",
            "-m", "tunewise.cli", command, *strip_launch_flags(argv)]


def call_forwarding_signals(cmd: list[str], **popen_kwargs) -> int:
    """Run `cmd` and wait for it; SIGTERM and SIGINT sent to this process are passed on to it (a training child
    then saves and stops) and the wait goes on, so no child is left running on its own."""
    import signal

    child = subprocess.Popen(cmd, **popen_kwargs)
    previous = {sig: signal.signal(sig, lambda signum, frame: child.send_signal(signum))
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def launch(args, argv: list[str], command: str, run_dir: Path) -> int:
    env = dict(os.environ, **{RUN_DIR_ENV: str(run_dir)})
    cmd = torchrun_command(args, argv, command)
    print("launching: " + " ".join(cmd), flush=True)
    code = call_forwarding_signals(cmd, env=env)
    if code in (130, 143, -2, -15):
        from tunewise.errors import Stopped

        raise Stopped(f"stopped by a signal; the processes saved what they could in {run_dir}. Continue with the "
                      "same command plus --resume_from_checkpoint latest.", 143 if code in (143, -15) else 130)
    if code != 0:
        raise UserError(f"training failed in one of the {args.nproc_per_node * args.nnodes} processes "
                        f"(exit code {code}); the messages above name the cause.")
    return 0


def shared_run_dir(make) -> tuple[Path, bool]:
    """(run directory, created here). Uses TUNEWISE_RUN_DIR when the launcher set it; under a plain torchrun, rank
    0 makes one with `make()` and publishes it in a marker file the other ranks wait for."""
    if os.environ.get(RUN_DIR_ENV):
        return Path(os.environ[RUN_DIR_ENV]), False
    if world_size() == 1:
        return make(), True
    marker = Path(os.environ.get("TMPDIR", "/tmp")) / f"tunewise-run-{os.environ.get('TORCHELASTIC_RUN_ID', 'none')}-{os.environ.get('MASTER_PORT', '')}"
    if rank() == 0:
        path = make()
        write_text_atomic(marker, str(path))
        return path, True
    for _ in range(600):
        if marker.is_file():
            return Path(marker.read_text()), False
        time.sleep(0.1)
    raise UserError(f"rank {rank()}: rank 0 did not create the run directory within 60 s.")
