"""GRPO rewards: the built-ins under ms-swift's names (accuracy, format, repetition, soft_overlong, cosine), user
rewards from --external_plugins files, and `reward_functions`, which turns --reward_funcs/--reward_weights into the
callables and weights TRL's GRPOTrainer takes.

A plugin file registers a reward with `@register("name")` (TRL's signature) or ms-swift's `orms["name"] = Class`.
"""
from tunewise.rewards.builtin import BUILTIN, RewardArgs
from tunewise.rewards.plugins import register
from tunewise.rewards.registry import BoundReward, check_rows, known_names, reward_functions, try_rewards

__all__ = ["BUILTIN", "BoundReward", "RewardArgs", "check_rows", "known_names", "register", "reward_functions",
           "try_rewards"]
