"""What the user named (a model, a checkpoint, a run directory, a merged export) and how it becomes a model, one way
for every command (infer, export, eval, serve, the web UI, dpo and sweep): `open_checkpoint` says what to load (base
model, LoRA adapter, tokenizer, chat template, the run's system prompt and args.json), `load` loads it (the adapter
attached, trainable, merged or left off), and the run directory's complete checkpoints are found here too.

A checkpoint is either a LoRA checkpoint (peft: adapter_config.json, read in models/adapter_config.py), applied on
the base model its run's args.json names, or a full checkpoint (config.json + weights), which is the model itself.
A checkpoint's run directory is the folder holding args.json: the checkpoint's parent, or the checkpoint itself
(each checkpoint carries a copy, so one copied elsewhere on its own still knows its base, system prompt and
template). A peft adapter made elsewhere, without args.json, is applied on the base its adapter_config.json names.
Checkpoints are never half-written (train/rundir.py publishes them whole), and one is complete once its
trainer_state.json is readable.
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from tunewise.errors import UserError
from tunewise.files import read_json
from tunewise.models.adapter_config import adapter_base, is_lora

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


@dataclass(frozen=True)
class Checkpoint:
    """What to load: the base model directory (or hub id), an optional LoRA adapter, the system prompt."""

    base: str  # a full checkpoint: the checkpoint itself
    adapter: str | None
    system: str | None
    label: str  # how it is shown: the model name, or the checkpoint path
    base_name: str  # the base model as its run (or the user) named it: what a follow-up run's args.json records
    run_args: dict = field(default_factory=dict)  # the run's args.json "args" ({} for a base model)
    template: str | None = None  # --template: a named chat template instead of the tokenizer's own

    @property
    def tokenizer_dir(self) -> str:
        """The adapter's own tokenizer when it saved one (a run may add tokens), else the base model's."""
        if self.adapter and (Path(self.adapter) / "tokenizer_config.json").is_file():
            return self.adapter
        return self.base

    def load_tokenizer(self):
        from tunewise.models.load import load_tokenizer

        return load_tokenizer(self.tokenizer_dir, self.template)


def find_run_dir(checkpoint: str) -> Path:
    """The run directory of a checkpoint: the folder holding args.json (the checkpoint's parent)."""
    path = Path(checkpoint).expanduser()
    if not path.is_dir():
        raise UserError(f"--adapters {checkpoint}: no such checkpoint directory.")
    for candidate in (path.parent, path):
        if (candidate / "args.json").is_file():
            return candidate
    raise UserError(f"--adapters {checkpoint}: no args.json beside it, so the base model is unknown; pass --model.")


def read_run_args(run_dir: Path) -> dict:
    path = Path(run_dir) / "args.json"
    try:
        args = json.loads(path.read_text(encoding="utf-8"))["args"]
        if not isinstance(args, dict) or not isinstance(args.get("model"), str):
            raise KeyError("args.model")
        return args
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path}: not a readable run record ({type(e).__name__}: {e}); pass --model to name the "
                        "base model.") from e


def run_args_of(checkpoint: str) -> dict:
    """The args of the run a checkpoint belongs to, or {} when it has no readable args.json."""
    try:
        return read_run_args(find_run_dir(checkpoint))
    except UserError:
        return {}


def checkpoint_of(spec: str) -> str:
    """A checkpoint directory as given, or a run directory's best (else last) checkpoint."""
    path = Path(spec).expanduser()
    if (path / "args.json").is_file() and not is_lora(path):
        for name in ("best", "last"):
            if (path / name).is_dir():
                return str(path / name)
    return spec


def is_checkpoint(spec: str) -> bool:
    """`spec` names a checkpoint of a run (LoRA or full) rather than a model: --adapters rather than --model."""
    path = Path(spec).expanduser()
    return path.is_dir() and (is_lora(path) or (path.parent / "args.json").is_file())


def find_checkpoints(root: Path) -> list[Path]:
    """LoRA checkpoints under root (runs one or two levels down), newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in (*root.glob("*"), *root.glob("*/*")) if is_lora(p)]
    found = [p for p in found if ".staging" not in p.parts and not p.name.endswith(".tmp")]
    return sorted(set(found), key=lambda p: p.stat().st_mtime, reverse=True)


def open_checkpoint(model: str | None = None, adapters: Sequence[str] = (), system: str | None = None,
                    template: str | None = None) -> Checkpoint:
    """What the user named -> what to load. --model: a built-in name, a model directory (a merged export too) or a
    hub id; --adapters: a LoRA or full checkpoint, or a run directory (its best, else last, checkpoint). Without
    --model a LoRA checkpoint's base is its run's; without --system the run's system prompt is used; without
    --template the tokenizer's own chat template (a checkpoint saves the one it was trained with)."""
    found = _open(model, [checkpoint_of(a) for a in adapters], system)
    return dataclasses.replace(found, template=template) if template else found


def _open(model: str | None, adapters: list[str], system: str | None) -> Checkpoint:
    from tunewise.models.load import DEFAULT_MODEL, resolve_model

    if len(adapters) > 1:
        raise UserError("--adapters: give one checkpoint (several adapters at once are served by `tunewise serve`).")
    if not adapters:
        name = model or DEFAULT_MODEL
        return Checkpoint(resolve_model(name), None, system, name, name)
    ckpt = Path(adapters[0]).expanduser()
    if not ckpt.is_dir():
        raise UserError(f"--adapters {ckpt}: no such checkpoint directory.")
    lora = is_lora(ckpt)
    if not lora and not (ckpt / "config.json").is_file():
        raise UserError(f"--adapters {ckpt}: neither a LoRA checkpoint (adapter_config.json) nor a model (config.json).")
    has_run = any((folder / "args.json").is_file() for folder in (ckpt.parent, ckpt))
    if lora and model is None and not has_run:  # a peft adapter from elsewhere: its adapter_config names the base
        model = adapter_base(ckpt)
        if model is None:
            raise UserError(f"--adapters {ckpt}: no args.json beside it and no base_model_name_or_path in its "
                            "adapter_config.json, so the base model is unknown; pass --model.")
    run_args = read_run_args(find_run_dir(str(ckpt))) if lora and model is None else run_args_of(str(ckpt))
    if system is None:
        system = run_args.get("system")
    if not lora:
        return Checkpoint(str(ckpt), None, system, str(ckpt), str(ckpt), run_args)
    base_name = model or run_args["model"]
    return Checkpoint(resolve_model(base_name), str(ckpt), system, str(ckpt), base_name, run_args)


ADAPTER_MODES = ("attached", "trainable", "merged", "none")


def load(checkpoint: Checkpoint, dtype: str = "auto", attn_impl: str | None = None, adapter: str = "attached",
         quantization=None, gradient_checkpointing: bool = False):
    """The checkpoint as a model: its base (--torch_dtype, --attn_impl) with its LoRA adapter, if it has one,
    `adapter`: "attached" (a peft model, frozen, the adapter switchable off: infer, eval), "trainable" (a peft
    model whose adapter trains on: dpo from an adapter), "merged" (folded into the weights: export, dpo's full
    training) or "none" (the base alone). A full checkpoint is the model itself in every mode. `quantization`
    (QLoRA, tunewise.models.quantization): the base in bitsandbytes' 4 or 8 bits, ready to train adapters on; an
    adapter is then never merged (into 4-bit weights it would be rounded away)."""
    from tunewise.models.load import load_model

    if adapter not in ADAPTER_MODES:
        raise ValueError(f"adapter must be one of {ADAPTER_MODES}, got {adapter!r}")
    if quantization is not None and adapter == "merged" and checkpoint.adapter is not None:
        raise ValueError("a LoRA adapter is not merged into quantized weights")
    refuse_reward_model(checkpoint.base)
    model = load_model(checkpoint.base, dtype, attn_impl, quantization, gradient_checkpointing)
    if checkpoint.adapter is None or adapter == "none":
        return model
    model = attach_adapter(model, checkpoint.adapter, trainable=adapter == "trainable")
    if adapter != "merged":
        return model
    # peft froze the base when the adapter was attached; merged, it is a plain model again, every weight trainable
    # as load_model gives it (dpo/orpo/... --train_type full from an adapter crashed on "does not require grad")
    return model.merge_and_unload().requires_grad_(True)


def attach_adapter(model, checkpoint: str, name: str = "default", trainable: bool = False):
    """The LoRA checkpoint's adapter on `model` under `name`: wrapped in a peft model the first time, added beside
    the ones a peft model already has after that (serve's adapters by name)."""
    from peft import PeftModel

    refuse_reward_model(checkpoint)
    if isinstance(model, PeftModel):
        model.load_adapter(checkpoint, adapter_name=name, is_trainable=trainable)
        return model
    return PeftModel.from_pretrained(model, checkpoint, adapter_name=name, is_trainable=trainable)


def refuse_reward_model(folder: str) -> None:
    """A reward model's checkpoint (`tunewise rlhf --rlhf_type rm`: a SEQ_CLS adapter, or a sequence classifier) has a
    score head and no language-model head: loaded as a causal LM it would generate from its backbone, its head dropped
    without a word. A UserError instead (tunewise.recipes.rm.load_reward_model loads it)."""
    path = Path(folder)
    task = (read_json(path / "adapter_config.json") or {}).get("task_type") if is_lora(path) else None
    architectures = (read_json(path / "config.json") or {}).get("architectures") or []
    if task == "SEQ_CLS" or any(str(a).endswith("ForSequenceClassification") for a in architectures):
        raise UserError(f"{folder}: a reward model (a sequence classifier, as `tunewise rlhf --rlhf_type rm` trains "
                        "one): it scores a conversation and cannot generate or be loaded as a chat model. Use it as a "
                        "GRPO reward (tunewise rlhf --rlhf_type grpo --reward_model CKPT), or score pairs with "
                        "tunewise.recipes.rm.load_reward_model and pair_rewards.")


def holds_run(folder: Path) -> bool:
    """`folder` is a training run's: it has args.json or a complete checkpoint."""
    folder = Path(folder)
    return folder.is_dir() and ((folder / "args.json").is_file() or bool(checkpoints(folder)))


def checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints (a readable trainer state), oldest step first; a folder that only has the name is none."""
    found = [(int(m.group(1)), p) for p in Path(run_dir).iterdir()
             if (m := _CHECKPOINT.match(p.name)) and p.is_dir() and trainer_state(p) is not None]
    return [p for _, p in sorted(found)]


def newest_checkpoint(run_dir: Path | None) -> Path | None:
    """The run's newest complete checkpoint, or None (no run directory yet, or no checkpoint in it)."""
    found = checkpoints(run_dir) if run_dir is not None and Path(run_dir).is_dir() else []
    return found[-1] if found else None


def step_of(checkpoint: Path) -> int:
    m = _CHECKPOINT.match(Path(checkpoint).name)
    return int(m.group(1)) if m else -1


def trainer_state(checkpoint: Path) -> dict | None:
    """The checkpoint's trainer_state.json (the Trainer writes it last), or None when it is missing or unreadable:
    then the checkpoint is not complete."""
    return read_json(Path(checkpoint) / "trainer_state.json")


def latest_checkpoint(output_dir: str) -> Path:
    """The newest complete checkpoint under OUTPUT_DIR (searching its versioned runs), by when its trainer state
    was written (a folder's own time changes when a sibling is deleted)."""
    root = Path(output_dir)
    candidates = []
    if root.is_dir():
        # not hidden folders: .staging holds saves that were never published, .deleting-* rotated ones
        for run in [root] + [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]:
            candidates += checkpoints(run)
    if not candidates:
        raise UserError(f"--resume_from_checkpoint latest: no complete checkpoint found under {root}.")
    return max(candidates, key=lambda p: (p / "trainer_state.json").stat().st_mtime)
