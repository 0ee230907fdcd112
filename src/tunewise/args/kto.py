"""The KTO flags of `tunewise rlhf --rlhf_type kto`, under ms-swift's names and TRL's defaults: the loss's strength
and the weights of desirable and undesirable rows (where the policy starts: tunewise.args.policy)."""
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

    def problems(self) -> list[str]:
        return super().problems() + self.kto_problems()

    def recipe(self) -> str:
        return f"kto_{self.train_type}"

    def kto_problems(self) -> list[str]:
        problems = [f"--{name} {getattr(self, name)}: must be positive." for name in
                    ("beta", "desirable_weight", "undesirable_weight") if getattr(self, name) <= 0]
        if self.per_device_train_batch_size < 2:
            problems.append(f"--per_device_train_batch_size {self.per_device_train_batch_size}: KTO estimates its KL "
                            "term from the other rows of a batch; give at least 2.")
        if self.group_by_length:
            problems.append("--group_by_length true: KTO keeps its rows in order (each row's KL term uses its "
                            "neighbour's reply); leave it out.")
        return problems
