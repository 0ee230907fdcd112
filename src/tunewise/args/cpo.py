"""The CPO and SimPO flags of `tunewise rlhf --rlhf_type cpo|simpo`, under ms-swift's names and defaults; TRL's
CPOTrainer runs both (SimPO is its loss_type "simpo"). Neither keeps a reference model: the implicit reward is the
policy's own log-probability of a reply (summed for sigmoid and hinge, averaged per token for ipo and simpo), times
--beta. Where the policy starts: tunewise.args.policy.

simpo differs from ms-swift in one default: --cpo_alpha is 0 (the SimPO paper's loss) where ms-swift keeps 1 and
warns that this trains CPO-SimPO; give --cpo_alpha 1 for that."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tunewise.flags import flag_field, not_one_of

CPO_LOSS_TYPES = ("sigmoid", "hinge", "ipo", "simpo")  # TRL 1.16 CPOConfig.loss_type ("alphapo" is simpo + --alpha)
SMOOTHED = ("sigmoid", "simpo")  # the losses TRL applies label_smoothing to
DEFAULT_SIMPO_GAMMA = 1.0  # ms-swift's (TRL's is 0.5; the SimPO paper uses 0.5 to 1.5)


@dataclass(frozen=True)
class CpoFlags:
    PADS: ClassVar[str] = "cpo pads its preference pairs"

    beta: float = flag_field(0.1, "scale of the implicit reward (the policy's log-probability of a reply)")
    loss_type: str = flag_field("sigmoid", "sigmoid | hinge | ipo | simpo (with --cpo_alpha > 0: CPO-SimPO)")
    cpo_alpha: float = flag_field(1.0, "weight of the NLL of the chosen reply added to the loss (CPO's behaviour "
                                       "cloning term; 0: none)")
    simpo_gamma: float = flag_field(DEFAULT_SIMPO_GAMMA, "SimPO's target reward margin (--loss_type simpo only)")
    label_smoothing: float = flag_field(0.0, "probability that a pair's preference is flipped (sigmoid and simpo)")

    def problems(self) -> list[str]:
        return super().problems() + self.cpo_problems()

    def recipe(self) -> str:
        return f"cpo_{self.train_type}"

    def cpo_problems(self) -> list[str]:
        problems = not_one_of(self, {"loss_type": CPO_LOSS_TYPES})
        if self.beta <= 0:
            problems.append(f"--beta {self.beta}: must be positive.")
        for name in ("cpo_alpha", "simpo_gamma"):
            if getattr(self, name) < 0:
                problems.append(f"--{name} {getattr(self, name)}: must be >= 0.")
        if self.simpo_gamma != DEFAULT_SIMPO_GAMMA and self.loss_type != "simpo":
            problems.append(f"--simpo_gamma {self.simpo_gamma}: SimPO's margin is used only with --loss_type simpo "
                            f"(this run's is {self.loss_type}).")
        if not 0 <= self.label_smoothing < 0.5:
            problems.append(f"--label_smoothing {self.label_smoothing}: must be in [0, 0.5).")
        elif self.label_smoothing and self.loss_type not in SMOOTHED:
            problems.append(f"--label_smoothing {self.label_smoothing}: the {self.loss_type} loss has no label "
                            f"smoothing (only {' and '.join(SMOOTHED)} do).")
        return problems


@dataclass(frozen=True)
class SimpoFlags(CpoFlags):
    """SimPO: CPO's trainer with the length-normalised loss and a target margin, ms-swift's defaults (beta 2.0), no
    NLL term unless --cpo_alpha is given."""
    PADS: ClassVar[str] = "simpo pads its preference pairs"

    beta: float = flag_field(2.0, "scale of the implicit reward (the policy's mean log-probability per reply token)")
    loss_type: str = flag_field("simpo", "simpo (the other CPO losses: --rlhf_type cpo)")
    cpo_alpha: float = flag_field(0.0, "weight of the NLL of the chosen reply added to the loss (0: SimPO's loss; "
                                       "ms-swift's default 1 trains CPO-SimPO)")

    def recipe(self) -> str:
        return f"simpo_{self.train_type}"

    def cpo_problems(self) -> list[str]:
        if self.loss_type != "simpo":
            return [f"--loss_type {self.loss_type}: --rlhf_type simpo trains SimPO's loss; for "
                    f"{self.loss_type}, use --rlhf_type cpo --loss_type {self.loss_type}."]
        return super().cpo_problems()
