"""The optimisation flags: how long, how fast (the learning-rate schedule), on how many samples per step, and what
happens when the optimizer leaves its plan or meets a non-finite loss."""
from __future__ import annotations

import json
from dataclasses import dataclass

from tunewise.flags import below_minimum, flag_field, not_one_of

DEFAULT_LEARNING_RATE = {"lora": 1e-4, "full": 1e-5}  # every weight moves in full fine-tuning: ten times below LoRA
GUARD_MODES = ("error", "warn", "off")
NAN_POLICIES = ("stop", "skip")


@dataclass(frozen=True)
class OptimisationArgs:
    num_train_epochs: float = flag_field(3.0, "training epochs")
    max_steps: int = flag_field(-1, "optimizer steps; overrides --num_train_epochs when > 0")
    learning_rate: float | None = flag_field(None, "peak learning rate (default: lora 1e-4, full 1e-5, as ms-swift; the built-in "
                                           "model recommends its own)")
    lr_scheduler_type: str = flag_field("cosine", "linear | cosine | cosine_with_min_lr | constant | constant_with_warmup | warmup_stable_decay")
    lr_scheduler_kwargs: str | None = flag_field(None, 'JSON object of scheduler options, e.g. {"min_lr_rate": 0.1}')
    warmup_ratio: float | None = flag_field(None, "warm-up as a fraction of the optimizer steps (default 0.05)")
    warmup_steps: int | None = flag_field(None, "warm-up in optimizer steps; give this or --warmup_ratio")
    per_device_train_batch_size: int = flag_field(1, "samples per device per forward pass")
    per_device_eval_batch_size: int = flag_field(1, "samples per device per evaluation pass")
    gradient_accumulation_steps: int = flag_field(16, "forward passes per optimizer step")
    weight_decay: float = flag_field(0.1, "AdamW weight decay")
    max_grad_norm: float = flag_field(1.0, "gradient clipping norm")
    seed: int = flag_field(42, "random seed")
    schedule_guard: str = flag_field("error", "when the optimizer's LR leaves the plan: error (stop) | warn | off")
    nan_policy: str = flag_field("stop", "a non-finite loss or gradient: stop (an error naming the step; the last "
                                         "finite checkpoint is kept) | skip (that optimizer step is skipped; 10 in a "
                                         "row stop the run)")

    def optimisation_problems(self) -> list[str]:
        """The problems of these flags; --learning_rate is filled in (by the command's class) before they are checked."""
        problems = not_one_of(self, {"schedule_guard": GUARD_MODES, "nan_policy": NAN_POLICIES})
        if self.warmup_ratio is not None and self.warmup_steps is not None:
            problems.append("--warmup_ratio and --warmup_steps are both set; give one.")
        if self.warmup_ratio is not None and not 0 <= self.warmup_ratio < 1:
            problems.append(f"--warmup_ratio {self.warmup_ratio}: must be in [0, 1).")
        problems += below_minimum(self, ("per_device_train_batch_size", "per_device_eval_batch_size",
                                         "gradient_accumulation_steps"))
        if self.learning_rate <= 0:
            problems.append(f"--learning_rate {self.learning_rate}: must be positive.")
        if self.num_train_epochs <= 0 and self.max_steps <= 0:
            problems.append("--num_train_epochs must be positive (or give --max_steps).")
        if self.lr_scheduler_kwargs:
            try:
                if not isinstance(json.loads(self.lr_scheduler_kwargs), dict):
                    raise ValueError
            except ValueError:
                problems.append(f"--lr_scheduler_kwargs {self.lr_scheduler_kwargs}: expected a JSON object.")
        return problems

    def scheduler_kwargs(self) -> dict:
        return json.loads(self.lr_scheduler_kwargs) if self.lr_scheduler_kwargs else {}
