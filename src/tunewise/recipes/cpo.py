"""`tunewise rlhf --rlhf_type cpo`: CPO on preference pairs, on TRL's CPOTrainer (trl.experimental.cpo).

CPO's loss is DPO's without a reference model: loss_type(beta * (log p(chosen) - log p(rejected))), plus --cpo_alpha
times the NLL of the chosen reply. No reference model (tunewise.recipes.reference_free). `--rlhf_type simpo` is the
same trainer with SimPO's loss (tunewise.recipes.simpo).
"""
from __future__ import annotations

from tunewise.args import CpoArgs
from tunewise.recipes import Recipe
from tunewise.recipes.reference_free import pair_recipe_fields


def config_fields(args: CpoArgs) -> dict:
    """CPOConfig's own fields (cpo's and simpo's); the shared ones come from the run (tunewise.train.build)."""
    return dict(remove_unused_columns=False,  # CPOTrainer's collator reads its own token columns
                beta=args.beta, loss_type=args.loss_type, cpo_alpha=args.cpo_alpha, simpo_gamma=args.simpo_gamma,
                label_smoothing=args.label_smoothing, max_length=args.max_length, disable_dropout=True,
                include_num_input_tokens_seen="no")  # its batches hold chosen_/rejected_input_ids, no input_ids


RECIPE = Recipe(args_class=CpoArgs, config_fields=config_fields, rlhf_type="cpo",
                **pair_recipe_fields("CPO", "trl.experimental.cpo"))
