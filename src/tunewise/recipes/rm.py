"""`tunewise rlhf --rlhf_type rm`: a reward model trained on preference pairs, on TRL's RewardTrainer.

The model is the base (or an SFT checkpoint) as a sequence classifier with one output (AutoModelForSequenceClassification,
num_labels=1): its backbone's last hidden state at a sequence's last non-padding token, through a new linear head
("score", drawn from --seed), is the reward. The loss is -log sigmoid(r(chosen) - r(rejected) - margin), plus
--center_rewards_coefficient times mean((r(chosen) + r(rejected))^2) (tunewise.args.rm).

The rows are dpo's (every form `tunewise dpo` reads, its checks and --max_length handling), each rendered whole with
the chat template as TRL does (prompt + reply); a row may carry a numeric "margin" (ms-swift's column), then every row
must. With LoRA the checkpoint is a peft adapter of task type SEQ_CLS whose modules_to_save hold the score head, so it
loads back as a sequence classifier on its base (`load_reward_model`) and gives the rewards the run trained.

Where the model starts: the base model; with --adapters an SFT checkpoint whose adapter keeps training under LoRA
(the score head added to it) or is merged in first for full training.
"""
from __future__ import annotations

import numbers

from tunewise.args import RmArgs
from tunewise.data.preference import encode_pairs, trl_row
from tunewise.errors import UserError
from tunewise.plan.run import Run
from tunewise.recipes import Recipe, trl_trainer
from tunewise.models.reward import SCORE_HEAD, reward_model
from tunewise.recipes.dpo import RECIPE as DPO

MARGIN = "margin"


def encode(tokenizer, convs, system: str | None, max_length: int, truncation: str = "delete"):
    """dpo's TRL rows (tunewise.data.preference.encode_pairs), each with its "margin" where the rows have one."""
    margins = row_margins(convs)
    rows, stats = encode_pairs(tokenizer, convs, system, max_length, truncation)
    if margins is None:
        return rows, stats
    # encode_pairs keeps rows in order and deletes some: walk the conversations alongside to find each kept row's
    candidates = iter(zip(convs, margins))
    with_margins = []
    for row in rows:
        margin = next(m for conv, m in candidates if trl_row(conv, system) == row)
        with_margins.append({**row, MARGIN: margin})
    return with_margins, stats


def row_margins(convs) -> list[float] | None:
    """Each row's "margin" (None: no row has one); a row without one where others have it, or one that is not a
    number, is a UserError naming its file:line (TRL's collator reads the column from every row of a batch or none)."""
    given = [conv for conv in convs if MARGIN in conv.extra]
    if not given:
        return None
    margins = []
    for conv in convs:
        if MARGIN not in conv.extra:
            raise UserError(f"{conv.origin}: no '{MARGIN}' field, where {given[0].origin} has one; give every "
                            f"preference row a margin, or none.")
        value = conv.extra[MARGIN]
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise UserError(f"{conv.origin}: field '{MARGIN}' must be a number, got {value!r}.")
        margins.append(float(value))
    return margins


def models(run: Run) -> dict:
    """The reward model and a new adapter's peft_config (None: the SFT checkpoint's adapter keeps training, or the
    model trains whole), as RewardTrainer takes them."""
    from transformers import set_seed

    args, start = run.args, run.start
    set_seed(args.seed)  # the score head and LoRA's A matrices are drawn when the model is loaded and wrapped
    keeps_adapter = args.train_type == "lora" and start.adapter is not None
    model = reward_model(start, run.tokenizer, args.torch_dtype, args.attn_impl,
                         adapter="trainable" if keeps_adapter else "merged")
    new_adapter = args.train_type == "lora" and start.adapter is None
    return {"model": model, "peft_config": reward_lora_config(args) if new_adapter else None}


def reward_lora_config(args):
    """The run's LoRA (tunewise.models.lora) on a sequence classifier: peft's SEQ_CLS task, the score head trained
    whole and saved in the adapter (modules_to_save), so the checkpoint is the reward model without the base."""
    from tunewise.models.lora import lora_config

    config = lora_config(args)
    config.task_type = "SEQ_CLS"
    config.modules_to_save = [SCORE_HEAD]
    return config


def load_reward_model(adapters: list[str], model: str | None = None, dtype: str = "float32"):
    """(reward model, tokenizer) of an rm checkpoint (LoRA: its base from the run's args.json, or --model; full: the
    checkpoint itself), in eval mode."""
    from tunewise.models.checkpoint import open_checkpoint

    checkpoint = open_checkpoint(model, adapters)
    tokenizer = checkpoint.load_tokenizer()
    return reward_model(checkpoint, tokenizer, dtype).eval(), tokenizer


def pair_rewards(model, tokenizer, rows: list[dict], batch_size: int = 16):
    """(chosen reward, rejected reward) of each TRL preference row (tunewise.data.preference.trl_row), each sequence
    rendered with the chat template as RewardTrainer renders it: a float tensor of shape (rows, 2)."""
    import torch

    from tunewise.data.template import template_ids

    sequences = [template_ids(tokenizer, row["prompt"] + row[side]) for row in rows for side in ("chosen", "rejected")]
    rewards = []
    with torch.no_grad():
        for start in range(0, len(sequences), batch_size):
            batch = sequences[start:start + batch_size]
            width = max(map(len, batch))
            ids = torch.tensor([s + [tokenizer.pad_token_id] * (width - len(s)) for s in batch])
            mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in batch])
            device = next(model.parameters()).device
            rewards.append(model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits[:, 0].float().cpu())
    return torch.cat(rewards).view(-1, 2)


def summary(metrics) -> list[str]:
    """RewardTrainer's accuracy (reward(chosen) > reward(rejected)) and mean margin at the last logged step."""
    last = metrics.latest
    lines = [f"last logged step: accuracy {last['accuracy']:.2f}, margin {last['margin']:.3f}"] \
        if "accuracy" in last else []
    return lines + ["score pairs with it: tunewise.recipes.rm.load_reward_model([CHECKPOINT]) and pair_rewards"]


def config_fields(args: RmArgs) -> dict:
    """RewardConfig's own fields; the shared ones come from the run (tunewise.train.build)."""
    return dict(center_rewards_coefficient=args.center_rewards_coefficient, max_length=args.max_length,
                disable_dropout=True)


RECIPE = Recipe(
    command="rlhf",
    args_class=RmArgs,
    dataset_hint=DPO.dataset_hint,
    load=DPO.load,
    encode=encode,
    start=DPO.start,
    models=models,
    config_fields=config_fields,
    summary=summary,
    pairs=True,
    score_head=True,  # the plan's memory: a score head, no vocabulary-wide logits
    **trl_trainer("Reward"),
    dropout=False,  # RewardConfig(disable_dropout=True)
    rlhf_type="rm",
)
