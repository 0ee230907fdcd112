"""The KTO flags of `tunewise rlhf --rlhf_type kto`, under ms-swift's names and TRL's defaults: the loss, its strength
and the weights of desirable and undesirable rows (where the policy starts: tunewise.args.policy).

TRL's KTOTrainer estimates the KL term of the `kto` loss from mismatched (prompt, reply) pairs made by rotating the
replies within each per-device batch, so it refuses a per-device batch of 1. A batch of 1 with an even gradient
accumulation k runs as 2 x k/2 instead (kl_regrouping): the same rows in each optimizer step, and the same weight for
each row, since KTOTrainer's loss is the mean over a micro-batch and the Trainer divides it by the accumulation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tunewise.flags import flag_field, not_one_of

KTO_LOSS_TYPES = ("kto", "apo_zero_unpaired")  # TRL 1.16 KTOConfig.loss_type
NO_KL_TERM = ("apo_zero_unpaired",)  # KTOTrainer: calculate_KL = loss_type not in ["apo_zero_unpaired"]


def kl_regrouping(loss_type: str, batch: int, accumulation: int) -> tuple[int, int] | None:
    """(per-device batch, accumulation) that KTOTrainer can run in place of a per-device batch of 1 with an even
    accumulation, whose KL term would pair each row with itself: two rows a batch, half the accumulation. None: the
    values run as given (no KL term, a batch of 2 or more), or cannot be regrouped (see kl_batch_problem)."""
    if loss_type in NO_KL_TERM or batch != 1 or accumulation % 2:
        return None
    return 2, accumulation // 2


def kl_batch_problem(loss_type: str, batch: int, accumulation: int) -> str | None:
    """Why a per-device batch of 1 cannot run with KTO's KL term (None: it can, as given or regrouped)."""
    if loss_type in NO_KL_TERM or batch != 1 or kl_regrouping(loss_type, batch, accumulation):
        return None
    options = " or ".join(f"{k} (run as 2 x {k // 2})" for k in (accumulation - 1, accumulation + 1) if k > 0)
    return (f"--per_device_train_batch_size 1 with --gradient_accumulation_steps {accumulation}: KTO estimates its KL "
            "term from the other rows of a per-device batch, so a batch of 1 runs as 2 rows with half the "
            f"accumulation, which needs an even --gradient_accumulation_steps; give --gradient_accumulation_steps "
            f"{options}, or --per_device_train_batch_size 2 or more, or --loss_type apo_zero_unpaired (no KL term).")


@dataclass(frozen=True)
class KtoFlags:
    PADS: ClassVar[str] = "kto pads its rows"

    loss_type: str = flag_field("kto", "kto (KTO's loss, with its KL term) | apo_zero_unpaired (APO-zero, no KL term)")
    beta: float = flag_field(0.1, "how far the policy may move from the reference (higher: closer)")
    desirable_weight: float = flag_field(1.0, "weight of the desirable rows' loss (KTO: raise it when they are fewer)")
    undesirable_weight: float = flag_field(1.0, "weight of the undesirable rows' loss")

    def problems(self) -> list[str]:
        return super().problems() + self.kto_problems()

    def recipe(self) -> str:
        return f"kto_{self.train_type}"

    def kto_problems(self) -> list[str]:
        problems = not_one_of(self, {"loss_type": KTO_LOSS_TYPES})
        problems += [f"--{name} {getattr(self, name)}: must be positive." for name in
                     ("beta", "desirable_weight", "undesirable_weight") if getattr(self, name) <= 0]
        batch = kl_batch_problem(self.loss_type, self.per_device_train_batch_size, self.gradient_accumulation_steps)
        if batch:
            problems.append(batch)
        if self.group_by_length:
            problems.append("--group_by_length true: KTO keeps its rows in order (each row's KL term uses its "
                            "neighbour's reply); leave it out.")
        return problems
