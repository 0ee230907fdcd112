"""The ORPO flags of `tunewise rlhf --rlhf_type orpo`, under ms-swift's names and defaults: the weight of the
odds-ratio term (the paper's lambda, which ms-swift and TRL call beta). ORPO keeps no reference model; where the
policy starts: tunewise.args.policy."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tunewise.flags import flag_field


@dataclass(frozen=True)
class OrpoFlags:
    PADS: ClassVar[str] = "orpo pads its preference pairs"

    beta: float = flag_field(0.1, "ORPO's lambda: the weight of the odds-ratio term beside the NLL of the chosen reply")

    def problems(self) -> list[str]:
        return super().problems() + self.orpo_problems()

    def recipe(self) -> str:
        return f"orpo_{self.train_type}"

    def orpo_problems(self) -> list[str]:
        return [f"--beta {self.beta}: must be positive (ORPO's lambda)."] if self.beta <= 0 else []
