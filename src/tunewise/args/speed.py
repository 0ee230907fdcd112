"""The speed flags: what each step computes (padding-free batches, the chunked or fused loss, recomputation,
compilation) and how fast batches are fed. The values are chosen per device in the plan (tunewise.models.device);
these flags only say what was asked."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tunewise.flags import flag_field


@dataclass(frozen=True)
class SpeedArgs:
    gradient_checkpointing: bool = flag_field(False, "recompute activations in the backward pass to save memory")
    padding_free: bool = flag_field(True, "concatenate a batch's rows into one sequence whose position_ids restart per "
                                          "row (attention stays inside each row; checked on the model before training) "
                                          "instead of padding them: the same loss, no compute spent on padding")
    chunked_loss: bool = flag_field(True, "the output layer and cross-entropy only at the trained positions, a chunk "
                                          "at a time, so the whole batch's vocabulary-wide logits never exist; false: "
                                          "the model's own loss over every position")
    use_liger_kernel: bool | None = flag_field(None, "Liger's fused Triton kernels, fused linear cross-entropy included "
                                                      "(CUDA; pip install 'tunewise[gpu]'); replaces --chunked_loss "
                                                      "(default: on for a CUDA run when liger-kernel is installed)")
    torch_compile: bool = flag_field(False, "compile the model with torch.compile (slow first steps)")
    dataloader_num_workers: int = flag_field(0, "data loader worker processes")

    def speed_problems(self) -> list[str]:
        return []  # every value is a choice; what a device cannot do is the plan's to say (tunewise.models.device)


@dataclass(frozen=True)
class TrainerLossArgs:
    """The speed flags of a command whose TRL trainer pads its sequences and computes its own loss (dpo, grpo, kto):
    the sft-only ones off, Liger's fused loss only when asked."""
    padding_free: bool = flag_field(False, "sft only: TRL's trainer pads this command's sequences")
    chunked_loss: bool = flag_field(False, "sft only: TRL's trainer computes this command's loss")
    packing: bool = flag_field(False, "sft only: this command trains on whole sequences, not packed rows")
    use_liger_kernel: bool | None = flag_field(False, "Liger's fused loss for this command (CUDA; pip install "
                                                      "'tunewise[gpu]')")

    PADS: ClassVar[str] = "this command pads its sequences"  # what the command's trainer pads, for the message

    def problems(self) -> list[str]:
        """The sft-only flags given, then the problems of the classes after this one (cooperative: the command's
        class lists this group before SftArgs)."""
        given = [flag for flag in ("padding_free", "chunked_loss", "packing") if getattr(self, flag)]
        own = [f"--{flag} true: an sft option; {self.PADS} and TRL computes their log-probabilities over every "
               "position." for flag in given]
        # sft's own rules about these flags (e.g. --packing needs padding-free batches) do not apply here
        return own + [p for p in super().problems() if not any(p.startswith(f"--{flag} ") for flag in given)]
