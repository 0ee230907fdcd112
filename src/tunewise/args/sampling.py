"""The sampling flags: how a reply is generated."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from tunewise.flags import below_minimum, flag_field


@dataclass(frozen=True)
class Sampling:
    """How a reply is generated: the sampling flags of `tunewise infer`, and the one sampling type the engine, the
    server and the web UI pass around (each fills it from its own inputs)."""

    temperature: float = flag_field(0.0, "0 = greedy")
    top_p: float = flag_field(1.0, "nucleus sampling")
    top_k: int = flag_field(50, "top-k sampling")
    repetition_penalty: float = flag_field(1.0, "> 1 discourages repetition")
    max_new_tokens: int = flag_field(512, "longest reply")
    seed: int | None = flag_field(None, "sampling seed")

    def sampling_problems(self) -> list[str]:
        problems = below_minimum(self, ("max_new_tokens",)) + below_minimum(self, ("top_k",), 0)
        if not self.temperature >= 0:
            problems.append(f"--temperature {self.temperature}: must be 0 (greedy) or more.")
        if not 0 < self.top_p <= 1:
            problems.append(f"--top_p {self.top_p}: must be in (0, 1].")
        if not self.repetition_penalty > 0:
            problems.append(f"--repetition_penalty {self.repetition_penalty}: must be positive.")
        return problems

    @classmethod
    def of(cls, args) -> "Sampling":
        """The sampling fields of `args` (InferArgs or any object that has them)."""
        return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})

