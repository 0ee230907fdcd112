"""Where a preference run's policy starts and what it is compared with: an SFT checkpoint to start from (dpo, kto,
orpo, simpo, cpo) and the reference model (dpo and kto only: orpo, simpo and cpo keep none)."""
from __future__ import annotations

from dataclasses import dataclass

from tunewise.flags import flag_field


@dataclass(frozen=True)
class AdapterStartArgs:
    adapters: list[str] = flag_field([], "start from this SFT checkpoint (LoRA: it keeps training; full: merged first)")

    def problems(self) -> list[str]:
        return super().problems() + (["--adapters: give one checkpoint to start from."] if len(self.adapters) > 1
                                     else [])


@dataclass(frozen=True)
class PolicyStartArgs(AdapterStartArgs):
    ref_model: str | None = flag_field(None, "reference model; default: the starting policy (LoRA: adapter disabled, no "
                                             "second copy; full: a frozen copy)")
