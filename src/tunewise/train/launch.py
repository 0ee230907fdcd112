"""Multi-process training: `--nproc_per_node N` (and multi-node flags) re-run the same command under torchrun.

The parent process checks the flags and the data and makes the plan first, so that bad input fails once, with
exit code 2 and no launcher traceback; on node 0 it then creates the run directory (or locks the resumed one) and
hands it to its ranks through TUNEWISE_RUN_DIR. The parent on any other node writes nothing: its ranks get the run
directory from global rank 0 over the process group (agree_on_run), as do the ranks of the user's own
`torchrun ... -m tunewise.cli sft ...`.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tunewise import ranks
from tunewise.errors import UserError

RUN_DIR_ENV = "TUNEWISE_RUN_DIR"
LAUNCH_FLAGS = ("nproc_per_node", "nnodes", "node_rank", "master_addr", "master_port")


def launched() -> str | None:
    """The run directory a launching parent handed to this process (None: no launching parent)."""
    return os.environ.get(RUN_DIR_ENV)


def wants_launch(args) -> bool:
    return not ranks.under_launcher() and (args.nproc_per_node > 1 or args.nnodes > 1)


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
    return [sys.executable, "-m", "tunewise.train.launch",
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


def launch(args, argv: list[str], command: str, run_dir: Path | None) -> int:
    """Run the command under torchrun; `run_dir` is node 0's run directory (None on the other nodes, whose ranks
    receive it from rank 0)."""
    env = {name: value for name, value in os.environ.items() if name != RUN_DIR_ENV}
    if run_dir is not None:
        env[RUN_DIR_ENV] = str(run_dir)
    if args.nnodes > 1 and "GLOO_SOCKET_IFNAME" not in env:
        interface, address = route_to(args.master_addr, args.master_port)
        env["GLOO_SOCKET_IFNAME"] = interface
        print(f"gloo talks to the other nodes over {interface} ({address}, the route to --master_addr "
              f"{args.master_addr}); set GLOO_SOCKET_IFNAME to choose another interface.", flush=True)
    cmd = torchrun_command(args, argv, command)
    print("launching (torchrun): " + " ".join(cmd), flush=True)
    code = call_forwarding_signals(cmd, env=env)
    where = f"in {run_dir}" if run_dir else "in node 0's run directory"
    if code in (130, 143, -2, -15):
        from tunewise.errors import Stopped

        raise Stopped(f"stopped by a signal; the processes saved what they could {where}. Continue with the "
                      "same command plus --resume_from_checkpoint latest.", 143 if code in (143, -15) else 130)
    if code != 0:
        processes = "processes" if args.nnodes == 1 else "processes of this node"
        raise UserError(f"training stopped in one of the {args.nproc_per_node} {processes} (exit code {code}"
                        f"{': the error above' if code == 2 else ''}); the messages above name the cause.")
    return 0


def route_to(host: str, port: int) -> tuple[str, str]:
    """(interface, local address) this machine reaches `host` through. gloo otherwise binds to the address the
    machine's hostname resolves to, often 127.0.x.x, and the nodes never connect."""
    import socket

    import psutil

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        with socket.socket(infos[0][0], socket.SOCK_DGRAM) as probe:
            probe.connect(infos[0][4])  # no packet is sent: this only asks the kernel for the route
            address = probe.getsockname()[0]
    except OSError as e:
        raise UserError(f"--master_addr {host}: no route from this machine ({e.strerror or e}); give the address "
                        "of node 0 that the other nodes can reach.") from e
    for interface, addresses in psutil.net_if_addrs().items():
        if any(a.address.split("%")[0] == address for a in addresses):
            return interface, address
    raise UserError(f"--master_addr {host}: this machine reaches it from {address}, which no network interface "
                    "holds; set GLOO_SOCKET_IFNAME to the interface the nodes share.")


def agree_on_run(decide) -> tuple[Path, Path | None, bool]:
    """(run directory, checkpoint to resume from or None, made here) as global rank 0 decides them with
    `decide()`; every other rank, on this node or another, receives rank 0's answer over the process group (a
    UserError on rank 0 is raised on every rank, so none waits for an answer that never comes). Each rank then
    checks that it sees that folder: processes on several machines share one run directory, so --output_dir must
    be on a filesystem all nodes mount (every checkpoint holds each process's RNG state, and with DeepSpeed its
    optimizer shard)."""
    if ranks.world_size() == 1:
        return decide()
    import torch
    import torch.distributed as dist

    init_process_group()
    answer: list = [None]
    if ranks.rank() == 0:
        try:
            run_dir, resume, created = decide()
            answer = [(str(run_dir), str(resume) if resume else None, None)]
        except UserError as e:
            answer = [(None, None, str(e))]
    dist.broadcast_object_list(answer, src=0, device=torch.device("cpu"))
    run_dir, resume, error = answer[0]
    if error:
        raise UserError(error if ranks.rank() == 0 else f"rank {ranks.rank()}: rank 0 stopped: {error}")
    missing = torch.zeros(ranks.world_size(), dtype=torch.int32)
    missing[ranks.rank()] = int(not Path(run_dir).is_dir() or (resume is not None and not Path(resume).is_dir()))
    dist.all_reduce(missing)
    if missing.any():
        blind = ", ".join(str(r) for r in missing.nonzero().flatten().tolist())
        raise UserError(f"{run_dir}: the run directory made by rank 0 is not visible to rank(s) {blind} (on "
                        f"another machine). --output_dir must be on a filesystem every node mounts at the same "
                        "path: each checkpoint holds every process's RNG state (and with DeepSpeed its optimizer "
                        "shard), which a resume reads back.")
    return Path(run_dir), Path(resume) if resume else None, created if ranks.rank() == 0 else False


def init_process_group() -> None:
    """The default process group, made before the Trainer's (accelerate and DeepSpeed reuse an initialised one):
    gloo without CUDA; with CUDA nccl for tensors plus gloo for the CPU objects exchanged here and by FSDP's
    CPU offload."""
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(ranks.local_rank())
        dist.init_process_group(backend="cpu:gloo,cuda:nccl")
    else:
        dist.init_process_group(backend="gloo")


def end_process_group() -> None:
    """Tear the default process group down before the process exits: left to the interpreter's shutdown, gloo's
    (and DeepSpeed's CPU shared-memory) threads can outlive their owners and abort a finished rank ("terminate
    called without an active exception", exit 134: seen once in CI after a complete ZeRO-3 run)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def torchrun_main(argv: list[str]) -> int:
    """torchrun (torch.distributed.run) itself, whose exit code is the first failed process's own (2 for a
    UserError, 128+N for signal N) instead of 1 after a launcher traceback that repeats what the process said."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    try:
        run(parse_args(argv))
    except ChildFailedError as e:
        code = e.get_first_failure()[1].exitcode
        return code if code > 0 else 128 - code if code < 0 else 1
    except SignalException as e:
        return 128 + int(e.sigval)
    return 0


if __name__ == "__main__":
    sys.exit(torchrun_main(sys.argv[1:]))
