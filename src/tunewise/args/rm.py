"""The reward-model flags of `tunewise rlhf --rlhf_type rm`, under ms-swift's names and defaults: the rewards'
centring weight (--center_rewards_coefficient, ms-swift's and TRL's default None: no centring term). The loss is
-log sigmoid(r(chosen) - r(rejected) - margin) (margin: a row's own "margin" column, else 0), plus the coefficient
times mean((r(chosen) + r(rejected))^2). No reference model; where the model starts: tunewise.args.policy.

What TRL's RewardTrainer cannot do is refused here: it drops (not cuts) a pair longer than --max_length, so only
--truncation_strategy delete says what it trains; it scores a whole sequence at its last token, so no packing
(tunewise.args.speed.TrainerLossArgs); QLoRA (--quant_bits) is not wired for the score head yet."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tunewise.flags import flag_field


@dataclass(frozen=True)
class RmFlags:
    PADS: ClassVar[str] = "rm pads its preference pairs and scores each sequence at its last token"

    center_rewards_coefficient: float | None = flag_field(
        None, "weight of mean((r(chosen) + r(rejected))^2) added to the loss, pulling rewards towards 0 (the paper "
              "recommends 0.01; default: no term)")

    def problems(self) -> list[str]:
        return super().problems() + self.rm_problems()

    def recipe(self) -> str:
        return f"rm_{self.train_type}"

    def rm_problems(self) -> list[str]:
        problems = []
        if self.center_rewards_coefficient is not None and self.center_rewards_coefficient < 0:
            problems.append(f"--center_rewards_coefficient {self.center_rewards_coefficient}: must be >= 0.")
        if self.truncation_strategy != "delete":
            problems.append(f"--truncation_strategy {self.truncation_strategy}: rm scores whole sequences and TRL's "
                            "RewardTrainer drops a pair longer than --max_length rather than cutting it; use delete "
                            "(the default), or raise --max_length.")
        if self.quant_bits is not None:
            problems.append(f"--quant_bits {self.quant_bits}: rm does not train on a quantized base yet (its score "
                            "head would be quantized with the other linear layers); leave --quant_bits out.")
        return problems
