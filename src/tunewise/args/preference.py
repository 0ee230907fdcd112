"""The preference flags of `tunewise dpo`: the DPO loss (TRL's loss types, summed with weights) and its strength
(where the policy starts and its reference: tunewise.args.policy)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tunewise.flags import flag_field

# TRL 1.16 DPOConfig.loss_type values
LOSS_TYPES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
              "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")


@dataclass(frozen=True)
class PreferenceArgs:
    PADS: ClassVar[str] = "dpo pads its preference pairs"
    beta: float = flag_field(0.1, "how far the policy may move from the reference (higher: closer); IPO's tau")
    loss_type: list[str] = flag_field(["sigmoid"], "sigmoid | ipo | hinge | robust | exo_pair | nca_pair | bco_pair | sppo_hard"
                                           " | aot | aot_unpaired | apo_zero | apo_down | discopop | sigmoid_norm | "
                                           "sft; several are summed", split_commas=True)
    loss_weights: list[float] = flag_field([], "one weight per --loss_type (default 1 each)", split_commas=True)
    rpo_alpha: float | None = flag_field(None, "RPO: add this times the NLL of the chosen reply (TRL's 'sft' loss) to the loss")
    label_smoothing: float = flag_field(0.0, "probability that a label is flipped (robust; exo_pair needs it > 0)")

    def problems(self) -> list[str]:
        return super().problems() + self.preference_problems()

    def recipe(self) -> str:
        return f"dpo_{self.train_type}"  # DPO wants far smaller steps than SFT on the same model

    def preference_problems(self) -> list[str]:
        problems = []
        unknown = [t for t in self.loss_type if t not in LOSS_TYPES]
        if unknown or not self.loss_type:
            problems.append(f"--loss_type {','.join(unknown) or '(empty)'}: expected one or more of "
                            f"{', '.join(LOSS_TYPES)}.")
        if self.loss_weights and len(self.loss_weights) != len(self.loss_type):
            problems.append(f"--loss_weights has {len(self.loss_weights)} values for {len(self.loss_type)} loss types.")
        if self.beta <= 0:
            problems.append(f"--beta {self.beta}: must be positive.")
        if self.rpo_alpha is not None and self.rpo_alpha < 0:
            problems.append(f"--rpo_alpha {self.rpo_alpha}: must be >= 0.")
        if not 0 <= self.label_smoothing < 0.5:
            problems.append(f"--label_smoothing {self.label_smoothing}: must be in [0, 0.5).")
        if "exo_pair" in self.loss_type and self.label_smoothing == 0:
            problems.append("--loss_type exo_pair needs --label_smoothing > 0 (the EXO paper uses 1e-3).")
        return problems

    def losses(self) -> tuple[list[str], list[float]]:
        """TRL's loss_type and loss_weights; --rpo_alpha adds the NLL of the chosen reply (TRL's "sft" loss)."""
        types = list(self.loss_type)
        weights = list(self.loss_weights) or [1.0] * len(types)
        if self.rpo_alpha:
            types.append("sft")
            weights.append(self.rpo_alpha)
        return types, weights
