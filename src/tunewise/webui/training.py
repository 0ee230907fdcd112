"""The subprocesses the tabs start (`tunewise sft|dpo|rlhf|eval|export`: log, state, stop), the Train tab's run
directory and metrics, and the loss / learning-rate plot frames read from its logging.jsonl."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tunewise.webui.commands import command_line
from tunewise.files import read_jsonl


class Job:
    """One `tunewise COMMAND` subprocess at a time (a tab's Start button): its log file (stdout and stderr), its
    state, and Stop, which waits for the process to end before it reports."""

    def __init__(self, workdir: Path, name: str = "job"):
        self.workdir = Path(workdir)
        self.name = name
        self.proc: subprocess.Popen | None = None
        self.log_path: Path | None = None
        self.command = ""
        self.argv: list[str] = []
        self.started = 0.0
        self.stopping = False  # Stop was pressed and the process has not ended yet
        self.stopped = False  # the process ended because of Stop

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def command_line(self) -> str:
        """The line started, as the form's preview shows it (`tunewise COMMAND ...`)."""
        return command_line(self.command, self.argv) if self.command else ""

    def start(self, command: str, argv: list[str]) -> str:
        if self.running:
            return "A run is already going; stop it first."
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / f"webui-{self.name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        self.command, self.argv = command, list(argv)
        self.stopping = self.stopped = False
        cmd = [sys.executable, "-m", "tunewise.cli", command, *self.argv]
        env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
        try:
            with self.log_path.open("w", encoding="utf-8") as log:
                log.write("$ " + self.command_line + "\n")
                log.flush()
                self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             env=env, start_new_session=True)
        except OSError as e:
            self.proc = None
            return f"not started: {e}"
        self.started = time.time()
        return f"started (pid {self.proc.pid})"

    def stop(self, grace: float = 15.0) -> str:
        """Ctrl-C to the run's process group, SIGTERM after `grace` seconds, SIGKILL after as many again; returns
        once the process has ended, with its end state."""
        if not self.running:
            return "No run is going."
        self.stopping = True
        try:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):  # tunewise handles Ctrl-C: exit code 130
                try:
                    os.killpg(self.proc.pid, sig)  # start_new_session: the process leads its own group
                except ProcessLookupError:
                    pass
                try:
                    self.proc.wait(grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
        finally:
            self.stopping = False
        self.stopped = not self.running
        return self.status()

    def wait(self, timeout: float | None = None) -> int:
        return self.proc.wait(timeout)

    def log_text(self, lines: int = 40) -> str:
        if not self.log_path or not self.log_path.is_file():
            return ""
        text = self.log_path.read_text(encoding="utf-8", errors="replace").replace("\r", "\n")
        kept = []
        for line in (line.rstrip() for line in text.splitlines()):
            if not line.strip():
                continue
            if kept and line.startswith("train:") and kept[-1].startswith("train:"):
                kept[-1] = line  # a progress bar redraws itself: keep its latest state only
            else:
                kept.append(line)
        shown = kept[-lines:]
        if kept and kept[0].startswith("$ ") and shown[0] is not kept[0]:  # the command stays on top of a long log
            shown = [kept[0], "..."] + shown[2:]
        return "\n".join(shown)

    def error_text(self) -> str:
        """A failed run's error as the command printed it: from its `tunewise CMD: error:` line (or traceback) on;
        else the log's last lines."""
        lines = self.log_text(400).splitlines()
        marks = [i for i, line in enumerate(lines) if line.startswith(f"tunewise {self.command}:")
                 or line.startswith("Traceback (most recent call last)")]
        return "\n".join(lines[marks[0]:] if marks else lines[-15:])

    def status(self) -> str:
        if self.proc is None:
            return "idle"
        if self.running:
            return "stopping…" if self.stopping else f"running for {time.time() - self.started:.0f} s"
        code = self.proc.returncode
        if self.stopped:
            return f"stopped (exit code {code})"
        return "finished" if code == 0 else f"failed (exit code {code}): {self.error_text()}"


class TrainJob(Job):
    """The Train tab's `tunewise sft|dpo|rlhf` run: also its run directory and the metrics it logs."""

    def __init__(self, workdir: Path):
        super().__init__(workdir, "train")

    def run_dir(self) -> Path | None:
        if not self.log_path or not self.log_path.is_file():
            return None
        for line in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("run directory: "):
                return Path(line[len("run directory: "):].strip())
        return None

    def records(self) -> list[dict]:
        run = self.run_dir()
        return read_jsonl(run / "logging.jsonl") if run else []


def plot_frames(records: list[dict]):
    """(loss frame, lr frame) for gr.LinePlot: step/value/series columns."""
    import pandas as pd

    loss = [{"step": r["step"], "value": r["loss"], "series": "train loss"} for r in records if "loss" in r]
    loss += [{"step": r["step"], "value": r["eval_loss"], "series": "eval loss"} for r in records if "eval_loss" in r]
    lr = [{"step": r["step"], "value": r["lr"], "series": "lr"} for r in records if "lr" in r]
    lr += [{"step": r["step"], "value": r["planned_lr"], "series": "planned lr"} for r in records if "planned_lr" in r]
    dtypes = {"step": "int64", "value": "float64", "series": "object"}  # numeric axes even before the first log

    def frame(rows):
        return pd.DataFrame(rows, columns=list(dtypes)).astype(dtypes)

    return frame(loss), frame(lr)
