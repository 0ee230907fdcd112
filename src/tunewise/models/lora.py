"""The peft LoRA configuration of a run's flags (sft and dpo build their adapters from it)."""
from __future__ import annotations


def lora_config(args):
    """A peft LoraConfig from --lora_rank, --lora_alpha, --lora_dropout and --target_modules (all-linear: every
    linear layer but the output head, peft's own rule)."""
    from peft import LoraConfig

    targets = "all-linear" if args.target_modules == ["all-linear"] else args.target_modules
    return LoraConfig(r=args.lora_rank, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                      target_modules=targets, task_type="CAUSAL_LM")


def check_target_modules(model_dir: str, targets: list[str]) -> None:
    """--target_modules names that match no module of the model are a UserError before anything is written (peft
    would refuse them only after the run directory exists). The module names come from the config alone: the model
    is built on the meta device, without weights."""
    from pathlib import Path

    if targets == ["all-linear"] or not (Path(model_dir) / "config.json").is_file():
        return  # a hub id: peft checks it when the model is loaded
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    names = [name for name, _ in model.named_modules()]
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        from tunewise.errors import UserError

        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise UserError(f"--target_modules {','.join(missing)}: no module of {model_dir} has that name; its linear "
                        f"layers are {', '.join(linear)} (or give all-linear).")
