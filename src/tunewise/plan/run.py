"""A Run: one training run, resolved once (tunewise.plan.resolve) before any model is loaded or file written."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from tunewise.args import SftArgs
    from tunewise.models.checkpoint import Checkpoint
    from tunewise.models.device import DevicePlan
    from tunewise.plan.deepspeed import Reconciled
    from tunewise.plan.fsdp import FsdpPlan
    from tunewise.plan.memory import MemoryEstimate
    from tunewise.plan.probes import Probes
    from tunewise.plan.schedule import LRSchedule, StepPlan


@dataclass(frozen=True)
class Run:
    """Everything decided before a model is loaded."""

    recipe: Any  # a tunewise.recipes.Recipe (the plan reads its data side only)
    args: SftArgs  # final and validated (the recipe's: SftArgs, DpoArgs, GrpoArgs, KtoArgs; frozen)
    sources: Mapping[str, str]  # flag -> default | yaml | flag | model | adapters (| deepspeed ...), "warmup"
    start: Checkpoint  # the base model, and the adapter a preference run (dpo, kto) starts from
    tokenizer: Any
    train_rows: list
    val_rows: list
    step_plan: StepPlan
    schedule: LRSchedule
    deepspeed: Reconciled | None  # with --deepspeed: the reconciled config
    fsdp: FsdpPlan | None  # with --fsdp: the reconciled fsdp_config
    probes: Probes | None  # with --retention_eval_steps
    identity_rows: int  # training rows of identity data (the advice's epoch rule reads it)
    notes: tuple[str, ...]  # printed before the plan and written to plan.json
    device: DevicePlan  # dtype, attention path and loss path on this machine's device
    memory: MemoryEstimate | None = None  # per device (tunewise.plan.footprint); None: the config tells no shape

    @property
    def model_dir(self) -> str:
        return self.start.base

    @property
    def zero_stage(self) -> int:
        """DeepSpeed's ZeRO stage (0 without DeepSpeed)."""
        return zero_stage(self.deepspeed)

    @property
    def rows(self) -> int:
        """Training rows (conversations or pairs); with --packing, train_rows holds packs of them."""
        return sum(len(r.get("lengths") or [r]) for r in self.train_rows)

    def plan_record(self) -> dict:
        """What plan.json keeps beside the schedule: the notes, the engine, the device's choices and the memory
        estimate (None where the model's config does not tell its shape)."""
        return {"notes": list(self.notes), "engine": self.engine, "device": self.device.as_dict(),
                "memory": self.memory.as_dict() if self.memory else None}

    @property
    def engine(self) -> str:
        """What runs the training processes, as the plan shows it."""
        nodes = f" on {self.args.nnodes} nodes" if self.args.nnodes > 1 else ""
        if self.deepspeed is not None:
            return f"DeepSpeed ZeRO-{self.zero_stage}{nodes}"
        if self.fsdp is not None:
            return self.fsdp.describe() + nodes
        return f"DDP (torchrun){nodes}" if self.step_plan.world_size > 1 else "one process"


def zero_stage(deepspeed: Reconciled | None) -> int:
    return int(deepspeed.config.get("zero_optimization", {}).get("stage", 0)) if deepspeed else 0


def mixed_precision(dtype: str) -> tuple[bool, bool]:
    """(bf16, fp16) for TrainingArguments (and the DeepSpeed JSON): only on CUDA."""
    import torch

    cuda = torch.cuda.is_available()
    return dtype == "bfloat16" and cuda, dtype == "float16" and cuda
