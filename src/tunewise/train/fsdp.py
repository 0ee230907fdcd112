"""FSDP at run time (the plan side is tunewise.plan.fsdp): accelerate's state on a machine without CUDA, and a
check that the Trainer really runs FSDP.

Why a CPU state of our own. accelerate 1.15 turns an FSDP plugin into an FSDP run only when its distributed type is
one of the accelerator kinds (``AcceleratorState.__init__``, accelerate 1.15.0 state.py lines 986-1013:
``elif self.distributed_type in [DistributedType.MULTI_GPU, MULTI_MLU, ..., MULTI_NEURON]`` ->
``DistributedType.FSDP``). On CPU processes
(``use_cpu=True``, gloo) the type is MULTI_CPU, not in that list, so the plugin is dropped without a word and the
model is wrapped in DDP: measured, ``--fsdp`` on 2 CPU processes trained plain DDP (the DDP reducer's warning, no
``pytorch_model_fsdp.bin``). PyTorch itself runs FSDP2 on CPU with gloo (``fully_shard`` shards on a CPU device
mesh; all-gather and reduce-scatter work), and accelerate's FSDP2 code paths run there too once chosen. So without
CUDA the process group is made here (gloo, CPU device) and its distributed type is set to MULTI_GPU before
transformers builds the Accelerator on it (``use_configured_state``); AcceleratorState then selects FSDP, exactly as
on GPUs. With CUDA nothing is changed. ``check_active`` stops a run whose Trainer did not enable FSDP anyway.
"""
from __future__ import annotations

from tunewise.errors import UserError


def cpu_state(run) -> dict | None:
    """The accelerator_config for TrainingArguments that makes --fsdp an FSDP run without CUDA (module docstring);
    None with CUDA or without --fsdp."""
    import torch

    if run.fsdp is None or torch.cuda.is_available():
        return None
    from accelerate import PartialState
    from accelerate.utils import DistributedType

    state = PartialState(cpu=True, backend="gloo")
    if state.distributed_type not in (DistributedType.MULTI_CPU, DistributedType.MULTI_GPU):
        raise UserError(f"--fsdp {run.args.fsdp}: accelerate made a {state.distributed_type} state for these "
                        "processes, not a multi-process CPU one; start them with --nproc_per_node (torchrun).")
    state.distributed_type = DistributedType.MULTI_GPU  # the shared state: AcceleratorState reads it next
    return {"use_configured_state": True}


def check_active(trainer, run) -> None:
    """A run asked for FSDP whose Trainer did not enable it is an error before the first step, not a DDP run."""
    if run.fsdp is not None and not getattr(trainer, "is_fsdp_enabled", False):
        state = getattr(getattr(trainer, "accelerator", None), "distributed_type", "unknown")
        raise UserError(f"--fsdp {run.args.fsdp}: accelerate did not enable FSDP (its distributed type is {state}), "
                        "so the run would be plain data parallel; nothing was trained.")
