"""The KTO flags of `tunewise rlhf --rlhf_type kto`, under ms-swift's names and TRL's defaults: the loss's strength
and the weights of desirable and undesirable rows, the reference, and the SFT checkpoint a run may start from."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tunewise.flags import flag_field


@dataclass(frozen=True)
class KtoFlags:
    PADS: ClassVar[str] = "kto pads its rows"

    beta: float = flag_field(0.1, "how far the policy may move from the reference (higher: closer)")
    desirable_weight: float = flag_field(1.0, "weight of the desirable rows' loss (KTO: raise it when they are fewer)")
    undesirable_weight: float = flag_field(1.0, "weight of the undesirable rows' loss")
    ref_model: str | None = flag_field(None, "reference model; default: the starting policy (LoRA: adapter disabled, no "
                                             "second copy; full: a frozen copy)")
    adapters: list[str] = flag_field([], "start from this SFT checkpoint (LoRA: it keeps training; full: merged first)")

    def problems(self) -> list[str]:
        return super().problems() + self.kto_problems()

    def recipe(self) -> str:
        return f"kto_{self.train_type}"

    def kto_problems(self) -> list[str]:
        problems = [f"--{name} {getattr(self, name)}: must be positive." for name in
                    ("beta", "desirable_weight", "undesirable_weight") if getattr(self, name) <= 0]
        if len(self.adapters) > 1:
            problems.append("--adapters: give one checkpoint to start from.")
        return problems
