"""`tunewise rlhf --rlhf_type kto`: KTO on unpaired rows, on TRL's KTOTrainer.

What kto declares: rows of one reply each, labelled desirable or not (tunewise.data.unpaired: ms-swift's messages +
label, or TRL's prompt/completion/label), and KTOConfig's own fields. Where the policy starts and what it is
compared with are dpo's (tunewise.recipes.dpo). A per-device batch of 1 runs as 2 with half the gradient
accumulation where the loss has a KL term (tunewise.args.kto), and the plan says so.
"""
from __future__ import annotations

from dataclasses import dataclass

from tunewise.args import KtoArgs
from tunewise.args.kto import kl_regrouping
from tunewise.data.unpaired import label_counts, load_unpaired, trl_row
from tunewise.recipes import Recipe, trl_trainer
from tunewise.recipes.dpo import models, start_from_adapters


@dataclass
class UnpairedStats:
    """What the plan says of KTO's rows."""
    rows: int
    desirable: int
    identity_rows: int = 0

    def summary(self) -> str:
        return f"{self.rows} rows ({self.desirable} desirable, {self.rows - self.desirable} undesirable)"


def encode(tokenizer, convs, system: str | None, max_length: int, truncation: str):
    """TRL's conversational unpaired rows (KTOTrainer tokenizes them itself, cut to --max_length)."""
    desirable, _ = label_counts(convs)
    return ([trl_row(c, system) for c in convs],
            UnpairedStats(len(convs), desirable, sum(bool(c.identity) for c in convs)))


def regroup(args: KtoArgs, sources: dict, world_size: int) -> tuple[dict, list[str]]:
    """A per-device batch of 1 with an even accumulation as 2 x half of it (the flags' sources keep the values given),
    said in a note; nothing for the values TRL's KTOTrainer takes as given."""
    batch, accumulation = args.per_device_train_batch_size, args.gradient_accumulation_steps
    regrouped = kl_regrouping(args.loss_type, batch, accumulation)
    if regrouped is None:
        return {}, []
    names = ("per_device_train_batch_size", "gradient_accumulation_steps")
    changes = {name: (value, f"{sources.get(name, 'default')} {given}, regrouped for KTO's KL term")
               for name, given, value in zip(names, (batch, accumulation), regrouped)}
    rows = batch * accumulation
    note = (f"note: KTO estimates its KL term from the other rows of a per-device batch; --per_device_train_batch_size "
            f"{batch} x --gradient_accumulation_steps {accumulation} runs as {regrouped[0]} x {regrouped[1]} (the same "
            f"{rows * world_size}-row global batch" + (f", {rows} rows a process" if world_size > 1 else "") + ").")
    return changes, [note]


def check(args: KtoArgs, rows: list[dict], tokenizer) -> list[str]:
    """A note when the rows hold one kind only, or the weights leave the two kinds' shares far apart."""
    desirable = sum(bool(r["label"]) for r in rows)
    undesirable = len(rows) - desirable
    if not desirable or not undesirable:
        return [f"note: kto: every row is {'desirable' if desirable else 'undesirable'}; KTO learns most from both kinds."]
    ratio = (desirable * args.desirable_weight) / (undesirable * args.undesirable_weight)
    if not 1 <= ratio <= 4 / 3:  # the KTO paper keeps the weighted shares within [1, 4/3]
        return [f"note: kto: {desirable} desirable and {undesirable} undesirable rows weighted "
                f"{args.desirable_weight:g}:{args.undesirable_weight:g} give a weighted ratio of {ratio:.2f}; the KTO "
                "paper keeps it within 1 to 4/3 (set --desirable_weight / --undesirable_weight)."]
    return []


def config_fields(args: KtoArgs) -> dict:
    """KTOConfig's own fields; the shared ones come from the run (tunewise.train.build)."""
    return dict(remove_unused_columns=False, loss_type=args.loss_type, beta=args.beta,
                desirable_weight=args.desirable_weight, undesirable_weight=args.undesirable_weight,
                max_length=args.max_length, disable_dropout=True,
                # TRL pairs each row with its neighbour's completion for the KL term: the order must stay fixed
                train_sampling_strategy="sequential")


RECIPE = Recipe(
    command="rlhf",
    rlhf_type="kto",
    args_class=KtoArgs,
    dataset_hint="--dataset is required: rows with one reply and a label ({\"messages\": [...], \"label\": true} or "
                 "{\"prompt\", \"completion\", \"label\"}), a dataset folder, a Hub id or SPEC#N.",
    load=load_unpaired,
    encode=encode,
    start=start_from_adapters,
    check=check,
    adjust=regroup,
    models=models,
    config_fields=config_fields,
    dropout=False,  # KTOConfig(disable_dropout=True)
    **trl_trainer("KTO"),
)
