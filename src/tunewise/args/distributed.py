"""The distributed flags: the processes and machines of a run (torchrun's), and how the model is sharded over them
(DeepSpeed ZeRO or PyTorch FSDP2; their configs are read and reconciled with the flags in tunewise.plan)."""
from __future__ import annotations

from dataclasses import dataclass

from tunewise.flags import below_minimum, flag_field, not_one_of

DS_SCHEDULER_MODES = ("flags", "keep")


@dataclass(frozen=True)
class DistributedArgs:
    deepspeed: str | None = flag_field(None, "DeepSpeed ZeRO: zero2 | zero3 | zero3_offload (built in) or a DeepSpeed JSON file")
    deepspeed_scheduler: str = flag_field("flags", "a 'scheduler' block in the DeepSpeed JSON: flags (removed with a warning; "
                                           "the flags decide) | keep (the JSON's scheduler is used and planned)")
    fsdp: str | None = flag_field(None, "PyTorch FSDP2 over the processes: option words as transformers spells them, "
                                   "'full_shard auto_wrap' (ZeRO-3-like) | 'shard_grad_op auto_wrap' (ZeRO-2-like), "
                                   "optionally with offload; ms-swift's preset fsdp2; or an ms-swift FSDP JSON file "
                                   "(a bare --fsdp: full_shard auto_wrap, as transformers)", const="full_shard auto_wrap")
    fsdp_config: str | None = flag_field(None, "transformers' fsdp_config for --fsdp: a JSON file or an inline JSON object "
                                          '(e.g. \'{"transformer_layer_cls_to_wrap": ["Qwen2DecoderLayer"]}\')')
    nproc_per_node: int = flag_field(1, "processes on this machine (data parallel; launched with torchrun); "
                                "ms-swift's NPROC_PER_NODE variable is read too", env="NPROC_PER_NODE")
    nnodes: int = flag_field(1, "machines taking part (torchrun --nnodes; or NNODES)", env="NNODES")
    node_rank: int = flag_field(0, "this machine's rank among --nnodes (torchrun --node_rank; or NODE_RANK)", env="NODE_RANK")
    master_addr: str = flag_field("127.0.0.1", "address of the rank-0 machine (torchrun --master_addr; or MASTER_ADDR)", env="MASTER_ADDR")
    master_port: int = flag_field(29500, "port of the rank-0 machine (torchrun --master_port; or MASTER_PORT)", env="MASTER_PORT")
    gpu_memory: str | None = flag_field(None, "GPU memory per device for the plan's memory estimate, e.g. 24GiB or 80GB (default: the visible GPU's)")
    local_rank: int = flag_field(-1, "set by the deepspeed launcher (torchrun uses the LOCAL_RANK variable); not for users")

    def distributed_problems(self) -> list[str]:
        problems = not_one_of(self, {"deepspeed_scheduler": DS_SCHEDULER_MODES})
        problems += below_minimum(self, ("nproc_per_node", "nnodes"))
        if self.fsdp_config and not self.fsdp:
            problems.append("--fsdp_config is read only with --fsdp (e.g. --fsdp 'full_shard auto_wrap').")
        if self.fsdp and self.deepspeed:
            problems.append(f"--fsdp {self.fsdp} and --deepspeed {self.deepspeed}: two sharding engines; give one.")
        return problems
