"""The `tunewise webui` flags."""
from __future__ import annotations

from dataclasses import dataclass

from tunewise.flags import flag_field
from tunewise.errors import UserError


@dataclass
class WebuiArgs:
    """A web UI to chat with, fine-tune (sft, dpo), evaluate, export and compare models (`tunewise webui`)."""

    host: str = flag_field("127.0.0.1", "address to bind; 0.0.0.0 exposes the UI to the network")
    port: int = flag_field(7860, "TCP port")
    model: str = flag_field("tunewise-tiny", "base model kept in memory for Chat and Compare")
    adapters: list[str] = flag_field([], "LoRA checkpoints offered by name: NAME=CHECKPOINT ... (more are found under --output_dir)")
    output_dir: str = flag_field("output", "where Train writes runs, and where Chat and Compare look for checkpoints")
    system: str | None = flag_field(None, "default system prompt")
    torch_dtype: str = flag_field("auto", "auto | float32 | bfloat16 | float16")

    def __post_init__(self):
        if not 0 < self.port < 65536:
            raise UserError(f"--port {self.port}: expected 1-65535.")
