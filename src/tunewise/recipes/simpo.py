"""`tunewise rlhf --rlhf_type simpo`: SimPO on preference pairs, TRL's CPOTrainer with loss_type "simpo" (as
ms-swift runs it): -log sigmoid(beta * (mean log p(chosen) - mean log p(rejected)) - simpo_gamma), the means per
reply token, no reference model; --cpo_alpha (default 0 here) adds the NLL of the chosen reply (CPO-SimPO)."""
from __future__ import annotations

import dataclasses

from tunewise.args import SimpoArgs
from tunewise.recipes.cpo import RECIPE as CPO

RECIPE = dataclasses.replace(CPO, args_class=SimpoArgs, rlhf_type="simpo")
