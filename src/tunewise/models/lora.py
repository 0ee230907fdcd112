"""The peft LoRA configuration of a run's flags (sft and dpo build their adapters from it)."""
from __future__ import annotations


def lora_config(args):
    """A peft LoraConfig from --lora_rank, --lora_alpha, --lora_dropout and --target_modules (all-linear: every
    linear layer but the output head, peft's own rule)."""
    from peft import LoraConfig

    targets = "all-linear" if args.target_modules == ["all-linear"] else args.target_modules
    return LoraConfig(r=args.lora_rank, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                      target_modules=targets, task_type="CAUSAL_LM")
