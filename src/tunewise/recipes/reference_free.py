"""What orpo, simpo and cpo share: dpo's preference pairs (every row form `tunewise dpo` reads, its checks and its
--max_length handling) and its start (a base model, or an SFT checkpoint with --adapters), but no reference model:
their losses read the policy's own log-probabilities only, so one model is loaded and trained.

TRL's ORPO and CPO trainers (trl.experimental, TRL 1.16) render the conversational rows with the tokenizer's chat
template, as DPOTrainer does, then append the EOS token to each reply where the template does not end with it (Qwen's
ends with "<|im_end|>\\n"): a reply trains one token more than dpo's, cut first where a pair reaches --max_length.
"""
from __future__ import annotations

import os

from tunewise.plan.run import Run

# TRL warns on every import of trl.experimental that its API may change; the version is pinned (constraints.txt)
# and the tests run these trainers, so the warning says nothing to a user
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def policy_models(run: Run) -> dict:
    """The policy alone, as TRL's CPOTrainer and ORPOTrainer take it: with --adapters and LoRA, the checkpoint's
    adapter keeps training; with LoRA from a base model, a new adapter (peft_config); full training trains the model
    itself (an adapter merged in first)."""
    from transformers import set_seed

    from tunewise.models.checkpoint import load
    from tunewise.models.lora import lora_config
    from tunewise.models.quantization import quantization_of

    args, start = run.args, run.start
    set_seed(args.seed)  # LoRA's A matrices are drawn when the trainer wraps the model (see sft.build_model)
    keeps_adapter = args.train_type == "lora" and start.adapter is not None
    policy = load(start, args.torch_dtype, args.attn_impl, adapter="trainable" if keeps_adapter else "merged",
                  quantization=quantization_of(args), gradient_checkpointing=args.gradient_checkpointing)
    new_adapter = args.train_type == "lora" and start.adapter is None
    return {"model": policy, "peft_config": lora_config(args) if new_adapter else None}


def pair_recipe_fields(trainer: str, module: str) -> dict:
    """The Recipe fields of a reference-free trainer on dpo's pairs: TRL's `trainer`Trainer/Config from `module`."""
    from tunewise.recipes import trl_trainer
    from tunewise.recipes.dpo import RECIPE as DPO, rewards

    return dict(command="rlhf", dataset_hint=DPO.dataset_hint, load=DPO.load, encode=DPO.encode, start=DPO.start,
                models=policy_models, summary=rewards, pairs=True, dropout=False,  # the configs' disable_dropout=True
                **trl_trainer(trainer, module))
