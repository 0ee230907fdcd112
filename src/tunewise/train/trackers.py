"""--report_to: where a run's metrics go besides logging.jsonl and the plots. TensorBoard writes RUN_DIR/runs;
Weights & Biases (wandb) and SwanLab (ms-swift's default) log through transformers' own callbacks, offline into
the run directory unless the user has set them up to reach their servers (an API key, a login, or their MODE
variable), so a run never stalls on a login prompt or an unreachable server.
"""
from __future__ import annotations

import os
from pathlib import Path


def tracker_callbacks(report_to: list[str], run_dir: Path) -> tuple[list, list[str]]:
    """(callbacks for the main process's trainer, one note a tracker prints about where it logs)."""
    callbacks, notes = [], []
    if "tensorboard" in report_to:
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        callbacks.append(TensorBoardCallback(SummaryWriter(log_dir=str(run_dir / "runs"))))
    if "wandb" in report_to:
        from transformers.integrations import WandbCallback

        os.environ.setdefault("WANDB_DIR", str(run_dir))
        os.environ.setdefault("WANDB_PROJECT", "tunewise")
        if "WANDB_MODE" not in os.environ and not _wandb_credentials():
            os.environ["WANDB_MODE"] = "offline"
            notes.append(f"wandb: offline (no API key or login), logging to {run_dir / 'wandb'}; upload later with "
                         f"`wandb sync {run_dir / 'wandb'}/offline-run-*`")
        callbacks.append(WandbCallback())
    if "swanlab" in report_to:
        from transformers.integrations import SwanLabCallback

        os.environ.setdefault("SWANLAB_LOG_DIR", str(run_dir / "swanlog"))
        os.environ.setdefault("SWANLAB_PROJECT", "tunewise")
        if "SWANLAB_MODE" not in os.environ and "SWANLAB_API_KEY" not in os.environ:
            os.environ["SWANLAB_MODE"] = "local"
            notes.append(f"swanlab: local mode (no SWANLAB_API_KEY), logging to {run_dir / 'swanlog'}")
        callbacks.append(SwanLabCallback())
    return callbacks, notes


def _wandb_credentials() -> bool:
    """An API key in the environment or a `wandb login` in ~/.netrc."""
    import netrc

    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def finish_trackers(report_to: list[str]) -> None:
    """End the wandb / swanlab run this training started (transformers' callbacks leave it open until exit), so
    its summary is written now and a later run in the same process starts its own."""
    import sys

    if "wandb" in report_to and "wandb" in sys.modules and sys.modules["wandb"].run is not None:
        sys.modules["wandb"].finish()
    if "swanlab" in report_to and "swanlab" in sys.modules:
        sys.modules["swanlab"].finish()
