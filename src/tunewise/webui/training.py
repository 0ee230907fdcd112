"""The Train tab's job: `tunewise sft` flags from the form, the run as a subprocess (log, run directory, metrics,
stop), and the loss / learning-rate plot frames read from its logging.jsonl."""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from tunewise.errors import UserError
from tunewise.files import read_jsonl


def sft_argv(form: dict, uploads: list[str] = ()) -> list[str]:
    """`tunewise sft` flags from the Train form (empty fields are left to their defaults)."""
    argv = ["--model", form.get("model") or "tunewise-tiny", "--train_type", form.get("train_type") or "lora"]
    datasets = [d.strip() for d in (form.get("dataset") or "").split(",") if d.strip()] + [str(u) for u in uploads]
    if not datasets:
        raise UserError("Give a dataset: upload a .jsonl/.json file or name one (e.g. self_cognition#80).")
    argv += ["--dataset", *datasets]
    for key in ("model_name", "model_author"):
        values = [v.strip() for v in (form.get(key) or "").split(",") if v.strip()]
        if values:
            argv += [f"--{key}", *values]
    for key in ("num_train_epochs", "max_steps", "learning_rate", "lr_scheduler_type", "warmup_ratio", "lora_rank",
                "lora_alpha", "per_device_train_batch_size", "gradient_accumulation_steps", "max_length",
                "logging_steps", "save_steps", "system", "output_dir"):
        value = form.get(key)
        if value is None or value == "":
            continue
        if isinstance(value, float) and value.is_integer() and key not in ("learning_rate", "warmup_ratio",
                                                                              "num_train_epochs"):
            value = int(value)
        argv += [f"--{key}", str(value)]
    argv += ["--report_to", "none"]
    extra = (form.get("extra") or "").strip()
    if extra:
        argv += shlex.split(extra)
    return argv


class TrainJob:
    """One `tunewise sft` subprocess at a time: its log file, run directory and metrics."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.proc: subprocess.Popen | None = None
        self.log_path: Path | None = None
        self.argv: list[str] = []
        self.started = 0.0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, argv: list[str]) -> str:
        if self.running:
            return "A run is already going; stop it first."
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / f"webui-train-{time.strftime('%Y%m%d-%H%M%S')}.log"
        self.argv = argv
        cmd = [sys.executable, "-m", "tunewise.cli", "sft", *argv]
        env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
        with self.log_path.open("w", encoding="utf-8") as log:
            log.write("$ tunewise sft " + shlex.join(argv) + "\n")
            log.flush()
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, start_new_session=True)
        self.started = time.time()
        return f"started (pid {self.proc.pid})"

    def stop(self, grace: float = 10.0) -> str:
        if not self.running:
            return "No run is going."
        pgid = os.getpgid(self.proc.pid)
        os.killpg(pgid, signal.SIGINT)  # tunewise handles Ctrl-C: exit code 130
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGTERM)
            self.proc.wait(grace)
        return f"stopped (exit code {self.proc.returncode})"

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
        return "\n".join(kept[-lines:])

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

    def status(self) -> str:
        if self.proc is None:
            return "idle"
        if self.running:
            return f"running for {time.time() - self.started:.0f} s"
        code = self.proc.returncode
        return "finished" if code == 0 else f"exited with code {code}"


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
