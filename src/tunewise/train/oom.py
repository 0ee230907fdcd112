"""Out of memory during a run: one paragraph and exit code 2 instead of a library traceback.

`is_out_of_memory(error)` recognises CUDA's `torch.OutOfMemoryError`, Python's `MemoryError` and PyTorch's CPU
allocator failure (a RuntimeError "DefaultCPUAllocator: can't allocate memory"). `out_of_memory_error(...)` turns one
into an `OutOfMemory` (a UserError) that names where it happened (a training step, an evaluation, a checkpoint
being saved), the plan's memory estimate against what was in use (CUDA: the peak allocated and reserved by PyTorch
and the device's total; CPU: the process's resident memory, its peak and the machine's total), the flags that cut
memory with their values now, the newest complete checkpoint (kept) and how to continue from it.

A process the Linux OOM killer ends (SIGKILL) never sees an exception; its checkpoints are still whole (they are
published only when complete) and `--resume_from_checkpoint latest` continues from the newest.

Test hook: TUNEWISE_TEST_OOM=WHEN:STEP[:KIND] makes a run fail for lack of memory at a chosen moment, so the tests
can check all of the above on CPU in a real run (`install_test_hook`; set by nothing but the tests):
  WHEN  step: at the start of optimizer step STEP (before its forward pass)
        eval: during the evaluation at step STEP (its first prediction step)
        save: while the checkpoint of step STEP is saved (written to the staging folder, not yet published)
  KIND  cuda (default): raise torch.OutOfMemoryError, as CUDA's allocator does (on a GPU: a real allocation of
        1 EiB on the device); cpu: a real allocation of 1 EiB by PyTorch's CPU allocator; python: a real
        bytearray of 1 EiB (Python's MemoryError). Nothing is allocated: each request fails at once.
"""
from __future__ import annotations

import errno
import os
import traceback
from pathlib import Path

from transformers import TrainerCallback

from tunewise.errors import UserError, brief
from tunewise.plan.memory import human

TEST_HOOK = "TUNEWISE_TEST_OOM"
# phrases of out-of-memory errors that are not torch.OutOfMemoryError or MemoryError: PyTorch's CPU allocator, CUDA
# errors from kernels and libraries (cuBLAS, NCCL) and DeepSpeed
OOM_PHRASES = ("can't allocate memory", "out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "cannot allocate memory")


class OutOfMemory(UserError):
    """The run ran out of memory; the message names the step, the memory in use and the flags that reduce it."""


def is_out_of_memory(error: BaseException) -> bool:
    """An out-of-memory error, or one raised while handling one (a library may wrap it)."""
    import torch

    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
            return True
        if isinstance(error, RuntimeError) and any(p.lower() in str(error).lower() for p in OOM_PHRASES):
            return True
        if isinstance(error, OSError) and error.errno == errno.ENOMEM:  # e.g. a data loader worker not forked
            return True
        error = error.__cause__ or error.__context__
    return False


def phase(error: BaseException) -> str:
    """'evaluation', 'saving' or 'training': where in the Trainer's loop the error was raised."""
    names = {frame.name for frame in traceback.extract_tb(error.__traceback__)}
    if names & {"evaluate", "_evaluate", "evaluation_loop", "prediction_step", "on_prediction_step"}:
        return "evaluation"
    if names & {"_save_checkpoint", "save_model", "_save", "on_save"}:
        return "saving"
    return "training"


def memory_in_use() -> str:
    """What the process held when it ran out: on CUDA PyTorch's peak allocated and reserved memory on this process's
    device and its total; otherwise the process's resident memory (now and at its peak) and the machine's total."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        device = torch.cuda.current_device()
        total = torch.cuda.get_device_properties(device).total_memory
        return (f"PyTorch's peak on cuda:{device} was {human(torch.cuda.max_memory_allocated(device))} allocated and "
                f"{human(torch.cuda.max_memory_reserved(device))} reserved, of the device's {human(total)}")
    import psutil

    rss = psutil.Process().memory_info().rss
    text = f"the process held {human(rss)} resident"
    try:
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
        text += f" (peak {human(peak)})"
    except (ImportError, OSError):
        pass
    memory = psutil.virtual_memory()
    text += f", of the machine's {human(memory.total)} ({human(memory.available)} available now)"
    limit = container_limit()
    return text + (f"; this container may use {human(limit)}" if limit is not None and limit < memory.total else "")


def container_limit() -> int | None:
    """The cgroup's memory limit (a container's or a batch job's), when one is set and readable."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            value = Path(path).read_text(encoding="utf-8").strip()
        except OSError:
            continue
        return int(value) if value.isdigit() else None
    return None


def planned(run) -> str:
    """The plan's estimate per device, as `tunewise plan` prints it, or why there is none."""
    estimate = run.memory
    if estimate is None:
        return "the plan has no memory estimate for this model (its config.json is not a decoder-only one)"
    return f"the plan estimated {human(estimate.total)} per device"


def batch_remedy(args) -> str:
    """How a smaller per-device batch cuts memory for this run. KTO's KL term needs 2 rows a device batch: a batch of
    1 would run as 2 again (tunewise.args.kto; `args` are the run's, so a typed 1 x k arrives as 2 x k/2), so at 2
    only the loss without that term goes lower."""
    from tunewise.args import KtoArgs
    from tunewise.args.kto import NO_KL_TERM

    bs, acc = args.per_device_train_batch_size, args.gradient_accumulation_steps
    smaller = (f"a smaller --per_device_train_batch_size (now {bs}; raise --gradient_accumulation_steps, now {acc}, "
               "by the same factor to keep the global batch)")
    kto_loss = args.loss_type if isinstance(args, KtoArgs) else None
    if kto_loss is None or kto_loss in NO_KL_TERM:
        return smaller
    if bs > 2:
        return smaller.replace(" (now", " of 2 or more (KTO's KL term pairs the rows of a device batch; now", 1)
    return (f"--loss_type apo_zero_unpaired --per_device_train_batch_size 1 --gradient_accumulation_steps {bs * acc} "
            f"(no KL term, so a per-device batch of 1 runs as given, the global batch kept; now --loss_type {kto_loss}, "
            f"whose KL term needs 2 rows a device batch: a batch of 1 runs as 2)")


def remedies(args) -> str:
    """The flags that cut memory, each with its value now."""
    parts = [batch_remedy(args), f"a shorter --max_length (now {args.max_length})"]
    if getattr(args, "packing", False):
        parts.append(f"a smaller --packing budget (each pack holds up to --max_length {args.max_length} tokens)")
    if not args.gradient_checkpointing:
        parts.append("--gradient_checkpointing true (recomputes activations in the backward pass; the plan's steps "
                     "stay the same)")
    if args.train_type == "full":
        parts.append("--train_type lora")
    fsdp = getattr(args, "fsdp", None)
    if fsdp:
        if "offload" not in fsdp:
            parts.append(f"FSDP's CPU offload (now --fsdp {fsdp}; --fsdp 'full_shard auto_wrap offload', CUDA only)")
    elif args.deepspeed is None:
        parts.append("DeepSpeed ZeRO with several processes (--nproc_per_node N --deepspeed zero2 or zero3) or CPU "
                     "offload (--deepspeed zero3_offload)")
    elif args.deepspeed != "zero3_offload":
        parts.append(f"a higher ZeRO stage or CPU offload (now --deepspeed {args.deepspeed}; zero3 or zero3_offload)")
    return "; ".join(parts)


def out_of_memory_error(error: BaseException, step: int, run_dir: Path, run=None) -> OutOfMemory:
    """The one-paragraph error for an out-of-memory `error` raised with `step` optimizer steps done."""
    from tunewise.models.checkpoint import newest_checkpoint

    where = phase(error)
    at = {"training": f"in training step {step + 1} ({step} steps done)",
          "evaluation": f"while evaluating at step {step}",
          "saving": f"while saving the checkpoint of step {step} (it was not published)"}[where]
    estimate = planned(run) if run is not None else "the plan's estimate is not known here"
    kept = newest_checkpoint(run_dir)
    keep = (f"The newest complete checkpoint is kept: {kept}; continue from it with the same command plus "
            "--resume_from_checkpoint latest (a change that keeps the plan's steps, such as --gradient_checkpointing "
            "true or a batch split into more accumulation steps, can be made on the way; one that changes them "
            "needs a new run)."
            if kept else "No checkpoint had been written yet (--save_steps sets how often one is); the run starts "
                         "again from the beginning.")
    cut = remedies(run.args) if run is not None else "a smaller batch, a shorter --max_length, gradient checkpointing"
    said = brief(error) if str(error).strip() else type(error).__name__  # Python's MemoryError says nothing more
    return OutOfMemory(f"out of memory {at}: {said}. {estimate[0].upper()}{estimate[1:]}; "
                       f"{memory_in_use()}. To use less memory: {cut}. {keep}")


class InjectOutOfMemory(TrainerCallback):
    """The test hook (see the module's docstring): fails for lack of memory once, at the moment TUNEWISE_TEST_OOM
    names. Not a stand-in for anything: the run, its checkpoints and its error handling are real."""

    def __init__(self, when: str, step: int, kind: str):
        self.when, self.step, self.kind, self.done = when, step, kind, False

    @classmethod
    def from_env(cls) -> "InjectOutOfMemory | None":
        value = os.environ.get(TEST_HOOK)
        if not value:
            return None
        parts = value.split(":")
        if len(parts) not in (2, 3) or parts[0] not in ("step", "eval", "save") or not parts[1].isdigit() or (
                len(parts) == 3 and parts[2] not in ("cuda", "cpu", "python")):
            raise UserError(f"{TEST_HOOK}={value}: expected WHEN:STEP[:KIND] with WHEN step|eval|save and KIND "
                            "cuda|cpu|python (a test hook; unset it for a normal run).")
        return cls(parts[0], int(parts[1]), parts[2] if len(parts) == 3 else "cuda")

    def fail(self) -> None:
        import torch

        self.done = True
        huge = 1 << 60
        if self.kind == "python":
            bytearray(huge)  # MemoryError
        elif self.kind == "cpu":
            torch.empty(huge, dtype=torch.uint8)  # RuntimeError: DefaultCPUAllocator: can't allocate memory
        elif torch.cuda.is_available():
            torch.empty(huge, dtype=torch.uint8, device="cuda")  # torch.OutOfMemoryError
        raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate 1 EiB ({TEST_HOOK} test hook)")

    def on_step_begin(self, args, state, control, **kwargs):
        if self.when == "step" and not self.done and state.global_step + 1 == self.step:
            self.fail()

    def on_prediction_step(self, args, state, control, **kwargs):
        if self.when == "eval" and not self.done and state.global_step == self.step:
            self.fail()

    def on_save(self, args, state, control, **kwargs):
        if self.when == "save" and not self.done and state.global_step == self.step:
            self.fail()


def install_test_hook(trainer) -> None:
    """Put the TUNEWISE_TEST_OOM hook first among the trainer's callbacks (its on_save before the checkpoint is
    published), when the variable is set."""
    hook = InjectOutOfMemory.from_env()
    if hook is not None:
        trainer.callback_handler.callbacks.insert(0, hook)
