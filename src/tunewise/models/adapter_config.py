"""adapter_config.json, peft's record of a LoRA adapter: read (and rewritten) in this module only.

A folder holding one is a LoRA checkpoint; it names the adapter's rank, dropout and the base model it was made on.
"""
from __future__ import annotations

import json
from pathlib import Path

ADAPTER_CONFIG = "adapter_config.json"


def is_lora(checkpoint: str | Path) -> bool:
    return (Path(checkpoint) / ADAPTER_CONFIG).is_file()


def read(checkpoint: str | Path) -> dict:
    """The adapter's config; OSError or ValueError when it is missing or not JSON."""
    return json.loads((Path(checkpoint) / ADAPTER_CONFIG).read_text(encoding="utf-8"))


def lora_rank(checkpoint: str | Path) -> int:
    return int(read(checkpoint).get("r", 8))


def lora_dropout(checkpoint: str | Path) -> float:
    """The dropout the adapter was trained with (an adapter that keeps training keeps it); 0.0 when not set."""
    return read(checkpoint).get("lora_dropout", 0.0)


def adapter_base(checkpoint: str | Path) -> str | None:
    """The base model a LoRA checkpoint's adapter_config.json names (peft's base_model_name_or_path)."""
    try:
        base = read(checkpoint).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError):
        return None
    return base if isinstance(base, str) and base else None


def name_base(checkpoint: str | Path, base_name: str) -> None:
    """Record `base_name` as the adapter's base (peft records the path it was loaded from: for the built-in model a
    folder inside this install), so that the adapter loads on another machine. No adapter_config.json: nothing."""
    from tunewise.files import write_json_atomic

    if not is_lora(checkpoint):
        return
    config = read(checkpoint)
    config["base_model_name_or_path"] = base_name
    write_json_atomic(Path(checkpoint) / ADAPTER_CONFIG, config)
