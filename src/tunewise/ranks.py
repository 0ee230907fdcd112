"""The one place that knows this process's place among a run's processes, from torchrun's environment (RANK,
LOCAL_RANK, WORLD_SIZE); a process started without a launcher is rank 0 of 1."""
from __future__ import annotations

import os


def under_launcher() -> bool:
    return "LOCAL_RANK" in os.environ


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return rank() == 0
