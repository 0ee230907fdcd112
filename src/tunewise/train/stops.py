"""Stopping a run without losing what it learnt: a non-finite loss or gradient, and SIGTERM/SIGINT.

* `FiniteGuard` looks at the gradient norm before every optimizer step (after clipping) and at every logged loss:
  a NaN or inf stops the run before the step is applied (`--nan_policy stop`: an error naming the step, the last
  finite checkpoint kept) or drops that step's update (`skip`: AdamW leaves a parameter without a gradient alone;
  the LR schedule moves on as planned). `PublishCheckpoints` asks it before publishing, so a checkpoint with
  non-finite weights is never published or rotated in.
* `SignalStop` turns SIGTERM (what job schedulers send) and SIGINT into "save a checkpoint at the end of this step,
  then stop"; a second signal ends the process at once. The run then ends with `Stopped` (exit 143 or 130) and
  says how to resume.
"""
from __future__ import annotations

import math
import signal

from transformers import TrainerCallback

from tunewise.errors import Stopped, UserError

MAX_SKIPS_IN_A_ROW = 10  # --nan_policy skip: past this, the run is diverging, not hitting a rare bad batch
CAUSES = ("a learning rate too high for this model and data (lower --learning_rate or raise the warm-up), float16 "
          "overflow (use bfloat16 or float32), or a corrupt row in the data")


class NonFiniteError(UserError):
    """A NaN or inf in the loss or the gradients stopped the run (exit 2)."""


class FiniteGuard(TrainerCallback):
    def __init__(self, policy: str = "stop", kept=lambda: None):
        self.policy = policy
        self.kept = kept  # () -> the newest published checkpoint, for the message
        self.skipped = 0  # steps skipped in all
        self.in_a_row = 0

    def stop(self, step: int, what: str) -> None:
        cp = self.kept()
        where = (f" The last checkpoint, saved while every value was finite, is kept: {cp} (resume from it with "
                 "--resume_from_checkpoint after changing the cause)." if cp else " No checkpoint had been written yet.")
        raise NonFiniteError(f"non-finite {what} at step {step}: the run stopped before that update was applied. "
                             f"Likely causes: {CAUSES}.{where} --nan_policy skip drops such steps instead.")

    def on_pre_optimizer_step(self, args, state, control, model=None, optimizer=None, **kwargs):
        import torch

        if model is None:
            return
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if not grads:  # DeepSpeed keeps the gradients itself: the logged values are checked instead
            return
        norm = torch.nn.utils.get_total_norm(grads).item()
        step = state.global_step + 1
        if math.isfinite(norm):
            self.in_a_row = 0
            return
        if self.policy == "stop":
            self.stop(step, f"gradient norm ({norm})")
        self.skipped += 1
        self.in_a_row += 1
        if self.in_a_row > MAX_SKIPS_IN_A_ROW:
            self.stop(step, f"gradient norm in {self.in_a_row} steps in a row ({self.skipped} skipped in all)")
        for p in model.parameters():
            p.grad = None  # the optimizer skips parameters without a gradient: this step changes no weight
        print(f"WARNING: non-finite gradient norm at step {step}: its update is skipped (--nan_policy skip; "
              f"{self.skipped} skipped so far).", flush=True)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        values = {key: logs.get(key) for key in ("loss", "grad_norm")}
        bad = [key for key, value in values.items() if isinstance(value, float) and not math.isfinite(value)]
        if bad and self.policy == "stop":
            self.stop(state.global_step, " and ".join(f"{key} ({values[key]})" for key in bad) + " in the log")

    @staticmethod
    def weights_finite(model) -> bool:
        """Every trainable parameter is finite, on every rank: each checks the values it holds (an FSDP shard; a
        ZeRO-3 placeholder holds none) and the ranks agree, so every rank must call it. Summing a norm over FSDP's
        sharded tensors on rank 0 alone would wait forever for the other ranks."""
        import torch
        import torch.distributed as dist

        local = [p.detach().to_local() if hasattr(p, "to_local") else p.detach()
                 for p in model.parameters() if p.requires_grad]
        local = [t for t in local if t.numel() > 0]
        finite = not local or math.isfinite(torch.nn.utils.get_total_norm(local).item())
        if dist.is_available() and dist.is_initialized():
            flag = torch.tensor([1.0 if finite else 0.0], device="cuda" if torch.cuda.is_available() else "cpu")
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            finite = bool(flag.item())
        return finite


class SignalStop(TrainerCallback):
    """SIGTERM/SIGINT during training: save at the end of the current step and stop; a second signal is final."""

    def __init__(self):
        self.received: int | None = None
        self.stopped_at: int | None = None
        self._previous = {}

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum, frame):
        if self.received is not None:  # the second one: no more waiting
            self.uninstall()
            raise KeyboardInterrupt if signum == signal.SIGINT else SystemExit(128 + signum)
        self.received = signum
        print(f"\n{signal.Signals(signum).name} received: saving a checkpoint at the end of this step, then stopping "
              "(send it again to stop at once, without saving).", flush=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self._agreed():
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at = state.global_step

    def _agreed(self) -> bool:
        """Every rank stops at the same step (one may be signalled a step before another)."""
        import torch
        import torch.distributed as dist

        flag = self.received is not None
        if dist.is_available() and dist.is_initialized():
            t = torch.tensor([1.0 if flag else 0.0], device="cuda" if torch.cuda.is_available() else "cpu")
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            flag = bool(t.item())
        return flag

    def result(self, last_checkpoint) -> Stopped | None:
        if self.stopped_at is None:
            return None
        code = 128 + (self.received or signal.SIGTERM)
        name = signal.Signals(self.received).name if self.received else "a signal on another rank"
        return Stopped(f"stopped by {name} at step {self.stopped_at}; checkpoint saved: {last_checkpoint}. Continue "
                       "with the same command plus --resume_from_checkpoint latest.", code)
