"""--reward_model: reward models whose score of a prompt and its completion is a GRPO reward (ms-swift's flag): a
`tunewise rlhf --rlhf_type rm` checkpoint (LoRA or full, or its run directory) or any sequence classifier with one
output. They come after the --reward_funcs, as in ms-swift, so --reward_weights names the functions' weights first.

TRL's GRPOTrainer scores them itself: each prompt + completion rendered with the reward model's chat template and
tokenizer, the logit at the last real token the reward. Here each is checked to be a reward model before anything
is written (a causal checkpoint read as a classifier would get a newly drawn score head: a random reward, without a
word), loaded with its adapter merged and frozen, and named after its checkpoint for the logs.
"""
from __future__ import annotations

from pathlib import Path

from tunewise.errors import UserError


def reward_checkpoints(paths) -> list:
    """The checkpoints (tunewise.models.checkpoint.Checkpoint) of `paths`, each proved a reward model: a SEQ_CLS
    adapter that saved its score head, or a model whose config names a ...ForSequenceClassification with one label."""
    from tunewise.files import read_json
    from tunewise.models.adapter_config import is_lora
    from tunewise.models.checkpoint import open_checkpoint
    from tunewise.models.reward import SCORE_HEAD

    found = []
    for path in paths:
        try:
            checkpoint = open_checkpoint(None, [path])
        except UserError as e:  # --model names the policy here: a LoRA reward model names its base itself
            said = str(e).split(": ", 1)[-1].replace(
                "; pass --model.", "; add base_model_name_or_path to its adapter_config.json (--model names the "
                                   "policy here).")
            raise UserError(f"--reward_model {path}: {said}") from None
        folder = Path(checkpoint.adapter or checkpoint.base)
        if checkpoint.adapter and is_lora(folder):
            config = read_json(folder / "adapter_config.json") or {}
            scores = config.get("task_type") == "SEQ_CLS" and SCORE_HEAD in (config.get("modules_to_save") or [])
        else:
            config = read_json(folder / "config.json") or {}
            scores = any(str(a).endswith("ForSequenceClassification") for a in config.get("architectures") or [])
            scores = scores and len(config.get("id2label") or {0: "LABEL_0"}) == 1
        if not scores:
            raise UserError(f"--reward_model {path}: {folder} is not a reward model (a sequence classifier with one "
                            "output and its score head, as `tunewise rlhf --rlhf_type rm` trains one); a chat model's "
                            "checkpoint would score with a newly drawn head. Train one with `tunewise rlhf "
                            "--rlhf_type rm`, or give a reward function with --reward_funcs.")
        found.append(checkpoint)
    return found


def reward_model_names(paths, taken=()) -> list[str]:
    """How the logs name each reward model (TRL: rewards/NAME/mean, and each completion's rewards by NAME): its
    checkpoint folder, with its run's name when the folder is a checkpoint-N; made unique among themselves and
    against `taken` (the --reward_funcs names: TRL would merge two rewards of one name without a word)."""
    names, used = [], set(taken)
    for path in paths:
        folder = Path(path).expanduser().resolve()
        base = f"{folder.parent.name}-{folder.name}" if folder.name.startswith("checkpoint-") else folder.name
        name, k = base or "reward_model", 2
        while name in used:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
        used.add(name)
    return names


def load_reward_models(paths, dtype: str = "auto", taken=()) -> tuple[list, list]:
    """(models, tokenizers) for GRPOTrainer's reward_funcs and reward_processing_classes: each reward model in eval
    mode with its adapter merged (a plain sequence classifier, as TRL expects) and frozen; `taken`: the reward
    functions' names."""
    from tunewise.models.reward import reward_model

    models, tokenizers = [], []
    for checkpoint, name in zip(reward_checkpoints(paths), reward_model_names(paths, taken)):
        tokenizer = checkpoint.load_tokenizer()
        model = reward_model(checkpoint, tokenizer, dtype, adapter="merged").eval().requires_grad_(False)
        model.config._name_or_path = name  # TRL names a model reward by the last part of this
        models.append(model)
        tokenizers.append(tokenizer)
    return models, tokenizers
