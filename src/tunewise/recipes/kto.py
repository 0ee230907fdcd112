"""`tunewise rlhf --rlhf_type kto`: KTO on unpaired rows, on TRL's KTOTrainer.

What kto declares: rows of one reply each, labelled desirable or not (tunewise.data.unpaired: ms-swift's messages +
label, or TRL's prompt/completion/label), and KTOConfig's own fields. Where the policy starts and what it is
compared with are dpo's (tunewise.recipes.dpo).
"""
from __future__ import annotations

from dataclasses import dataclass

from tunewise.args import KtoArgs
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
    return dict(remove_unused_columns=False, beta=args.beta, desirable_weight=args.desirable_weight,
                undesirable_weight=args.undesirable_weight, max_length=args.max_length, disable_dropout=True,
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
    models=models,
    config_fields=config_fields,
    dropout=False,  # KTOConfig(disable_dropout=True)
    **trl_trainer("KTO"),
)
