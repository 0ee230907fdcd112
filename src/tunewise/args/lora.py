"""The flags of what is trained: LoRA adapters or every weight, and the adapters' shape."""
from __future__ import annotations

from dataclasses import dataclass

from tunewise.flags import below_minimum, flag_field, not_one_of

TRAIN_TYPES = ("lora", "full")


@dataclass(frozen=True)
class LoraArgs:
    train_type: str = flag_field("lora", "lora | full", aliases=("tuner_type",))
    lora_rank: int = flag_field(8, "LoRA rank r")
    lora_alpha: int = flag_field(32, "LoRA alpha")
    lora_dropout: float = flag_field(0.05, "LoRA dropout")
    target_modules: list[str] = flag_field(["all-linear"], "modules that get LoRA: all-linear or names (q_proj,v_proj,...)", split_commas=True)

    def lora_problems(self) -> list[str]:
        problems = not_one_of(self, {"train_type": TRAIN_TYPES}) + below_minimum(self, ("lora_rank", "lora_alpha"))
        if not 0 <= self.lora_dropout < 1:
            problems.append(f"--lora_dropout {self.lora_dropout}: must be in [0, 1).")
        return problems
