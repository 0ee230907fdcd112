"""`tunewise dpo`: direct preference optimisation with LoRA or all parameters, on TRL's DPOTrainer.

What dpo declares: preference pairs, a policy that may start from an sft adapter, its reference, and DPOConfig's own
fields. The run directory, plan, schedule guard, checkpoints and plots are those of `tunewise sft`; `tunewise infer` and
`tunewise export` read the checkpoints back the same way.

Where the policy starts and what it is compared with (the reference):
  * LoRA from a base model: a new adapter; the reference is the same weights with the adapter disabled (one copy).
  * LoRA from an SFT adapter (`--adapters CKPT`): that adapter keeps training; the reference is a frozen copy of
    the adapter ("ref", a few MB) on the same base weights (one copy). Checkpoints are adapters on the base model.
  * full: the model itself (a merged export via --model, or base + --adapters merged in memory) and a frozen copy.
  * `--ref_model M` names another reference model (loaded as a second model).
"""
from __future__ import annotations

from tunewise.args import DpoArgs
from tunewise.data.preference import encode_pairs, load_preferences
from tunewise.models.lora import lora_config
from tunewise.plan.run import Run
from tunewise.recipes import Recipe, trl_trainer


def start_from_adapters(args: DpoArgs, sources: dict):
    """(where the policy starts, the flags that sets): with --adapters CKPT, its run's base model and system prompt
    unless given (a full checkpoint is the model itself); else the base model."""
    from tunewise.models.checkpoint import open_checkpoint as resolve

    if not args.adapters:
        return resolve(args.model, [], template=args.template), {}
    model_given = sources.get("model") != "default"
    checkpoint = resolve(args.model if model_given else None, args.adapters, args.system, args.template)
    changes = {} if model_given else {"model": (checkpoint.base_name, "adapters")}
    if args.system is None and checkpoint.system is not None:
        changes["system"] = (checkpoint.system, "adapters")
    return checkpoint, changes


def models(run: Run) -> dict:
    """The policy, its reference (None: DPOTrainer's own) and a new adapter's peft_config (None: the policy
    has its adapter, or is trained whole), as DPOTrainer takes them; see the module docstring."""
    policy, ref, peft_config = build_models(run)
    return {"model": policy, "ref_model": ref, "peft_config": peft_config}


def build_models(run: Run):
    from transformers import set_seed

    from tunewise.models.checkpoint import load
    from tunewise.models.load import load_model, resolve_model
    from tunewise.models.quantization import quantization_of

    args, start = run.args, run.start
    quant = quantization_of(args)  # QLoRA: the base (and a --ref_model) in bitsandbytes' 4 or 8 bits
    set_seed(args.seed)  # LoRA's A matrices are drawn before DPOTrainer seeds (see sft.build_model)

    def starting_model(trainable_adapter: bool):
        return load(start, args.torch_dtype, args.attn_impl, adapter="trainable" if trainable_adapter else "merged",
                    quantization=quant, gradient_checkpointing=args.gradient_checkpointing)

    ref = None
    if args.ref_model:
        ref = load_model(resolve_model(args.ref_model), args.torch_dtype, args.attn_impl, quant).eval()
    if args.train_type == "lora":
        if start.adapter:  # DPOTrainer copies the adapter to a frozen "ref" adapter when ref is None
            return starting_model(trainable_adapter=True), ref, None
        return starting_model(False), ref, lora_config(args)  # reference: the adapter disabled
    policy = starting_model(False)
    if ref is None:
        ref = starting_model(False).eval()
        for p in ref.parameters():
            p.requires_grad_(False)
    return policy, ref, None


def config_fields(args: DpoArgs) -> dict:
    """DPOConfig's own fields; the shared ones come from the run (tunewise.train.build)."""
    loss_type, loss_weights = args.losses()
    return dict(remove_unused_columns=True,  # DPOTrainer keeps the token columns it needs
                beta=args.beta, loss_type=loss_type, loss_weights=loss_weights, label_smoothing=args.label_smoothing,
                max_length=args.max_length, truncation_mode="keep_start", precompute_ref_log_probs=False,
                disable_dropout=True)


def rewards(metrics) -> list[str]:
    last = metrics.latest
    if "rewards/accuracies" not in last:
        return []
    return [f"last logged step: rewards/accuracies {last['rewards/accuracies']:.2f}, "
            f"rewards/margins {last['rewards/margins']:.3f}"]


RECIPE = Recipe(
    command="dpo",
    args_class=DpoArgs,
    dataset_hint="--dataset is required: a .jsonl/.json/.csv/.parquet file of preference pairs, a dataset folder, a "
                 "Hub id (owner/name), SPEC#N, or a built-in set such as concise.",
    load=load_preferences,
    encode=encode_pairs,
    start=start_from_adapters,
    models=models,
    config_fields=config_fields,
    summary=rewards,
    pairs=True,
    **trl_trainer("DPO"),
    dropout=False,  # dpo_config: disable_dropout=True
)
