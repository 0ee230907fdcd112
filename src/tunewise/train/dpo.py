"""`tunewise dpo`: direct preference optimisation with LoRA or all parameters, read top to bottom.

flags -> args -> preference pairs -> plan -> run dir -> policy (+ reference) -> trl.DPOTrainer + callbacks.
The run directory, plan, schedule guard, checkpoints and plots are those of `tunewise sft`; `tunewise infer` and
`tunewise export` read the checkpoints back the same way.

Where the policy starts and what it is compared with (the reference):
  * LoRA from a base model: a new adapter; the reference is the same weights with the adapter disabled (one copy).
  * LoRA from an SFT adapter (`--adapters CKPT`): that adapter keeps training; the reference is a frozen copy of
    the adapter ("ref", a few MB) on the same base weights (one copy). Checkpoints are adapters on the base model.
  * full: the model itself (a merged export via --model, or base + --adapters merged in memory) and a frozen copy.
  * `--ref_model M` names another reference model (loaded as a second model).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, fields
from pathlib import Path

from tunewise.args import SftArgs, _f
from tunewise.errors import UserError
from tunewise.train.rundir import STAGING
from tunewise.models.lora import lora_config
from tunewise.train.session import (
    Prepared,
    apply_model_defaults,
    command_main,
    load_and_encode,
    make_prepared,
    open_run,
    run_callbacks,
    run_training,
    training_arguments,
)

# TRL 1.16 DPOConfig.loss_type values
LOSS_TYPES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
              "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")


@dataclass
class DpoArgs(SftArgs):
    """Direct preference optimisation (`tunewise dpo`): the sft flags plus the DPO ones."""

    beta: float = _f(0.1, "how far the policy may move from the reference (higher: closer); IPO's tau")
    loss_type: list[str] = _f(["sigmoid"], "sigmoid | ipo | hinge | robust | exo_pair | nca_pair | bco_pair | sppo_hard"
                                           " | aot | aot_unpaired | apo_zero | apo_down | discopop | sigmoid_norm | "
                                           "sft; several are summed", split_commas=True)
    loss_weights: list[float] = _f([], "one weight per --loss_type (default 1 each)", split_commas=True)
    rpo_alpha: float | None = _f(None, "RPO: add this times the NLL of the chosen reply (TRL's 'sft' loss) to the loss")
    label_smoothing: float = _f(0.0, "probability that a label is flipped (robust; exo_pair needs it > 0)")
    ref_model: str | None = _f(None, "reference model; default: the starting policy (LoRA: adapter disabled, no "
                                     "second copy; full: a frozen copy)")
    adapters: list[str] = _f([], "start from this SFT checkpoint (LoRA: it keeps training; full: merged first)")

    def __post_init__(self):
        problems = []
        try:
            super().__post_init__()
        except UserError as e:
            problems.append(str(e))
        unknown = [t for t in self.loss_type if t not in LOSS_TYPES]
        if unknown or not self.loss_type:
            problems.append(f"--loss_type {','.join(unknown) or '(empty)'}: expected one or more of "
                            f"{', '.join(LOSS_TYPES)}.")
        if self.loss_weights and len(self.loss_weights) != len(self.loss_type):
            problems.append(f"--loss_weights has {len(self.loss_weights)} values for {len(self.loss_type)} loss types.")
        if self.beta <= 0:
            problems.append(f"--beta {self.beta}: must be positive.")
        if self.rpo_alpha is not None and self.rpo_alpha < 0:
            problems.append(f"--rpo_alpha {self.rpo_alpha}: must be >= 0.")
        if not 0 <= self.label_smoothing < 0.5:
            problems.append(f"--label_smoothing {self.label_smoothing}: must be in [0, 0.5).")
        if "exo_pair" in self.loss_type and self.label_smoothing == 0:
            problems.append("--loss_type exo_pair needs --label_smoothing > 0 (the EXO paper uses 1e-3).")
        if len(self.adapters) > 1:
            problems.append("--adapters: give one checkpoint to start from.")
        if problems:
            raise UserError(" ".join(problems))

    def recipe(self) -> str:
        return f"dpo_{self.train_type}"  # DPO wants far smaller steps than SFT on the same model

    def losses(self) -> tuple[list[str], list[float]]:
        """TRL's loss_type and loss_weights; --rpo_alpha adds the NLL of the chosen reply (TRL's "sft" loss)."""
        types = list(self.loss_type)
        weights = list(self.loss_weights) or [1.0] * len(types)
        if self.rpo_alpha:
            types.append("sft")
            weights.append(self.rpo_alpha)
        return types, weights


@dataclass
class Start:
    """Where the policy starts: the base model directory, an adapter on it, and the system prompt of that run."""

    base: str
    adapter: str | None
    system: str | None


def resolve_start(args: DpoArgs, sources: dict) -> Start:
    """--adapters CKPT: its run's base model and system prompt unless given; a full checkpoint is the model."""
    from tunewise.infer.engine import resolve_spec
    from tunewise.models.load import resolve_model

    from tunewise.train.rundir import find_run_dir, read_run_args

    if not args.adapters:
        return Start(resolve_model(args.model), None, args.system)
    model_given = sources.get("model") != "default"
    spec = resolve_spec(args.model if model_given else None, args.adapters, args.system)
    if not model_given:  # args.json names the base as the adapter's run does, so infer finds it the same way
        args.model = read_run_args(find_run_dir(spec.adapter))["model"] if spec.adapter else spec.base
        sources["model"] = "adapters"
    if args.system is None and spec.system is not None:
        args.system, sources["system"] = spec.system, "adapters"
    return Start(spec.base, spec.adapter, spec.system)


def prepare(args: DpoArgs, sources: dict) -> Prepared:
    """The sft preparation for preference pairs; `prep.start` says where the policy starts."""
    from tunewise.data.preference import encode_pairs, load_preferences
    from tunewise.models.load import load_tokenizer

    if not args.dataset:
        raise UserError("--dataset is required: a .jsonl/.json file of preference pairs, PATH#N, or a built-in set "
                        "such as concise.")
    start = resolve_start(args, sources)
    notes = []
    apply_model_defaults(args, sources, start.base, notes)
    if start.adapter:
        notes.append(f"starting from {start.adapter} on {start.base}"
                     + (" (the adapter keeps training; its LoRA settings apply)" if args.train_type == "lora"
                        else " (merged, then trained in full)"))
    own_tokenizer = start.adapter and (Path(start.adapter) / "tokenizer_config.json").is_file()
    tokenizer = load_tokenizer(start.adapter if own_tokenizer else start.base)
    train_rows, val_rows, _ = load_and_encode(args, tokenizer, load_preferences, encode_pairs, notes, "pairs")
    prep = make_prepared(args, sources, start.base, tokenizer, train_rows, val_rows, notes)
    prep.start = start
    return prep


def build_models(prep: Prepared):
    """(policy, reference or None, peft_config or None) as DPOTrainer takes them; see the module docstring."""
    from transformers import set_seed

    from tunewise.models.load import load_model, resolve_model

    args, start = prep.args, prep.start
    set_seed(args.seed)  # LoRA's A matrices are drawn before DPOTrainer seeds (see sft.build_model)

    def starting_model(trainable_adapter: bool):
        model = load_model(start.base, args.torch_dtype, args.attn_impl)
        if start.adapter is None:
            return model
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, start.adapter, is_trainable=trainable_adapter)
        return model if trainable_adapter else model.merge_and_unload()

    ref = None
    if args.ref_model:
        ref = load_model(resolve_model(args.ref_model), args.torch_dtype, args.attn_impl).eval()
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


def dpo_config(prep: Prepared, staging: Path):
    """DPOConfig = the sft TrainingArguments (one source for the shared settings) + the DPO fields."""
    from transformers import TrainingArguments
    from trl import DPOConfig

    args = prep.args
    shared = training_arguments(prep, staging)
    kwargs = {f.name: getattr(shared, f.name) for f in fields(TrainingArguments) if f.init}
    loss_type, loss_weights = args.losses()
    kwargs.update(
        remove_unused_columns=True,  # DPOTrainer keeps the token columns it needs
        beta=args.beta, loss_type=loss_type, loss_weights=loss_weights, label_smoothing=args.label_smoothing,
        max_length=args.max_length, truncation_mode="keep_start", precompute_ref_log_probs=False,
        disable_dropout=True,
    )
    return DPOConfig(**kwargs)


def build_trainer(prep: Prepared, run_dir: Path):
    """(DPOTrainer, MetricsLog, BestTracker) with the sft callbacks, writing into `run_dir`."""
    from datasets import Dataset
    from trl import DPOTrainer

    policy, ref, peft_config = build_models(prep)
    callbacks, metrics, best = run_callbacks(prep, run_dir)
    trainer = DPOTrainer(
        model=policy,
        ref_model=ref,
        args=dpo_config(prep, run_dir / STAGING),
        train_dataset=Dataset.from_list(prep.train_rows),
        eval_dataset=Dataset.from_list(prep.val_rows) if prep.val_rows else None,
        processing_class=prep.tokenizer,
        callbacks=callbacks,
        peft_config=peft_config,
    )
    return trainer, metrics, best


def train(args: DpoArgs, sources: dict) -> Path:
    prep = prepare(args, sources)
    run_dir, resume = open_run(prep, "dpo")
    trainer, metrics, best = build_trainer(prep, run_dir)

    def rewards():
        last = metrics.latest
        if "rewards/accuracies" not in last:
            return []
        return [f"last logged step: rewards/accuracies {last['rewards/accuracies']:.2f}, "
                f"rewards/margins {last['rewards/margins']:.3f}"]

    run_training(trainer, run_dir, resume, best, rewards)
    return run_dir


def main(argv: list[str]) -> int:
    return command_main(argv, DpoArgs, "dpo", prepare, train)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
