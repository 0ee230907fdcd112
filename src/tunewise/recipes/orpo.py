"""`tunewise rlhf --rlhf_type orpo`: ORPO on preference pairs, on TRL's ORPOTrainer (trl.experimental.orpo).

ORPO adds to the NLL of the chosen reply (over prompt and reply, as TRL computes it) the odds-ratio term, weighted
by --beta (the paper's lambda): -log sigmoid(log odds(chosen) - log odds(rejected)), where a reply's odds are
p / (1 - p) of its mean per-token log-probability. No reference model (tunewise.recipes.reference_free).
"""
from __future__ import annotations

from tunewise.args import OrpoArgs
from tunewise.recipes import Recipe
from tunewise.recipes.reference_free import pair_recipe_fields


def config_fields(args: OrpoArgs) -> dict:
    """ORPOConfig's own fields; the shared ones come from the run (tunewise.train.build)."""
    return dict(remove_unused_columns=False,  # ORPOTrainer's collator reads its own token columns
                beta=args.beta, max_length=args.max_length, disable_dropout=True,
                include_num_input_tokens_seen="no")  # its batches hold chosen_/rejected_input_ids, no input_ids


RECIPE = Recipe(args_class=OrpoArgs, config_fields=config_fields, rlhf_type="orpo",
                **pair_recipe_fields("ORPO", "trl.experimental.orpo"))
