"""SIGTERM and SIGINT for a whole sweep (`tunewise sweep`, tunewise.sweep.run): the first one received stops it, wherever
it is, and its running trial with it; see run.py's docstring for what the sweep then keeps and says."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import contextmanager


class SweepInterrupted(BaseException):
    """Raised by StopSignals' handler where the sweep can stop at once (planning, evaluation); a BaseException so
    that no `except Exception` in the evaluation code swallows it."""


class StopSignals:
    """SIGTERM and SIGINT for the whole sweep. The first one received is kept (`received`) and stops the sweep:
    passed on to a running trial (which stops; the sweep waits for it), raised at once as SweepInterrupted where
    nothing is being written (planning, evaluation, between trials), or, inside `held()` (a trial's process being
    waited for, a record or results being written), raised when that block ends."""

    def __init__(self):
        self.received: int | None = None
        self.child: subprocess.Popen | None = None
        self.holds = 0
        self.where = "before the first trial"  # for the message
        self._previous = {}
        self._previous_hook = sys.unraisablehook

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        self._previous_hook, sys.unraisablehook = sys.unraisablehook, self._unraisable

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
        sys.unraisablehook = self._previous_hook

    def _unraisable(self, unraisable) -> None:
        """The handler ran inside a callback that cannot raise (a weakref's or a __del__ during the evaluation's
        garbage collection), so Python would print SweepInterrupted and go on: deliver the signal again once this
        hook has returned (from another thread: raised here, it would be lost the same way), and the handler
        raises in the code that follows; should that be another such callback, this repeats."""
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type, SweepInterrupted):
            import threading

            returned = threading.Event()
            resend = lambda: returned.wait() and os.kill(os.getpid(), self.received or signal.SIGTERM)  # noqa: E731
            threading.Thread(target=resend, daemon=True).start()
            returned.set()
            return
        self._previous_hook(unraisable)

    def _handle(self, signum, frame):
        if self.received is None:
            self.received = signum
            print(f"\n{signal.Signals(signum).name} received: the sweep stops {self.where}.", file=sys.stderr,
                  flush=True)
        self.forward(signum)
        if not self.holds:
            raise SweepInterrupted

    def forward(self, signum: int) -> None:
        """Pass the signal on to the running trial, which may not have got it (`kill PID` of the sweep). When its
        process group was signalled it gets two and stops at once instead of after its step: the trial is run again
        from scratch anyway."""
        child = self.child
        if child is not None and child.poll() is None:
            try:
                child.send_signal(signum)
            except ProcessLookupError:
                pass

    def check(self) -> None:
        if self.received is not None:
            raise SweepInterrupted

    @contextmanager
    def held(self):
        """A block the signal does not cut short; the sweep stops when it ends."""
        self.holds += 1
        try:
            yield
        finally:
            self.holds -= 1
        self.check()

    def run_child(self, cmd: list[str], **popen_kwargs) -> int:
        """Run a trial's process and wait for it; call inside `held()`."""
        self.child = subprocess.Popen(cmd, **popen_kwargs)
        try:
            if self.received is not None:  # received between the start of the process and now
                self.forward(self.received)
            return self.child.wait()
        finally:
            self.child = None
