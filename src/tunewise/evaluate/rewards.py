"""GRPO's rewards on held-out prompts, for `tunewise eval --reward_funcs ...`: each prompt answered greedily, every
reward called on the replies as GRPOTrainer calls it during training (the row's columns, the solution above all, as
keywords), and for each reward its mean and the share of replies it scores above 0 (its accuracy: for accuracy,
format and cosine, the share judged right).

The prompts are --reward_dataset (GRPO's prompt rows: {"messages", "solution"}, {"query", "response"}, ...), or, for
the embedded model, its 200 held-out additions with their sum as solution (prompts no GRPO `additions` row holds).
Without --reward_funcs, a GRPO run's own rewards (its args.json) are used.
"""
from __future__ import annotations

from dataclasses import dataclass, field

HELDOUT_ADDITIONS = "heldout_additions"


@dataclass
class RewardRow:
    messages: list[dict]  # the prompt, without the system prompt (the model's own is added when it is asked)
    columns: dict  # the row's other fields (solution, ...), passed to the rewards by name
    origin: str


@dataclass
class RewardSuite:
    rewards: list  # tunewise.rewards.BoundReward
    rows: list[RewardRow] = field(default_factory=list)
    kind: str = HELDOUT_ADDITIONS  # or "dataset"

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.rewards]


def heldout_addition_rows() -> list[RewardRow]:
    from tunewise.evaluate.skills import addition_eval_set

    return [RewardRow([{"role": "user", "content": it["query"]}], {"solution": it["reference"]},
                      f"held-out addition {i + 1}") for i, it in enumerate(addition_eval_set())]


def dataset_rows(specs: list[str]) -> list[RewardRow]:
    from tunewise.data.prompts import ORIGIN, load_prompts

    return [RewardRow(c.messages, {k: v for k, v in c.extra.items() if k != ORIGIN}, c.origin)
            for c in load_prompts(specs)]


def reward_suite(names: list[str], plugins: list[str], specs: list[str], builtin_model: bool,
                 max_new_tokens: int) -> RewardSuite:
    """The rewards (looked up as `tunewise rlhf` does) and their prompts, checked: every column a reward needs is in
    every row, and every reward is called once on the first rows' own solutions (a UserError names what fails)."""
    from tunewise.errors import UserError
    from tunewise.rewards import RewardArgs, reward_functions, try_rewards

    if specs:
        rows, kind = dataset_rows(specs), "dataset"
    elif builtin_model:
        rows, kind = heldout_addition_rows(), HELDOUT_ADDITIONS
    else:
        raise UserError("--reward_funcs needs prompts to score: --reward_dataset (GRPO prompt rows with a solution); "
                        "only the embedded model has built-in held-out prompts.")
    table = [{"prompt": r.messages, **r.columns, "row_origin": r.origin} for r in rows]
    rewards, _ = reward_functions(names, None, plugins, table, "--reward_dataset " + " ".join(specs or [kind]),
                                  RewardArgs(max_completion_length=max_new_tokens))
    try_rewards(rewards, table)
    return RewardSuite(rewards, rows, kind)


def score(suite: RewardSuite, replies, tokenizer) -> tuple[dict, list[dict]]:
    """(metrics rewards/<name>/mean and rewards/<name>/accuracy, one record per row) for the greedy `replies`
    (models.generate.Reply) to the suite's rows, in order."""
    rows = suite.rows
    prompts = [r.messages for r in rows]
    completions = [[{"role": "assistant", "content": g.text}] for g in replies]
    completion_ids = [tokenizer(g.text, add_special_tokens=False)["input_ids"] for g in replies]
    keys = list(dict.fromkeys(k for r in rows for k in r.columns))
    columns = {k: [r.columns.get(k) for r in rows] for k in keys}
    columns["row_origin"] = [r.origin for r in rows]
    values = {reward.name: reward(prompts=prompts, completions=completions, completion_ids=completion_ids,
                                  trainer_state=None, **columns) for reward in suite.rewards}
    metrics = {}
    for name, scores in values.items():
        scored = [s for s in scores if s is not None]  # None: the reward does not apply to that row
        metrics[f"rewards/{name}/mean"] = sum(scored) / len(scored) if scored else None
        metrics[f"rewards/{name}/accuracy"] = sum(s > 0 for s in scored) / len(scored) if scored else None
    records = [{"messages": r.messages, "origin": r.origin, "solution": r.columns.get("solution"), "reply": g.text,
                "finish_reason": g.finish_reason, "rewards": {name: values[name][i] for name in values}}
               for i, (r, g) in enumerate(zip(rows, replies))]
    return metrics, records


def metric_spec(key: str):
    """(label, direction, format) of a rewards/<name>/<stat> metric, as report.METRICS holds the fixed ones."""
    _, name, stat = key.split("/", 2)
    if stat == "mean":
        return (f"reward {name}: mean", +1, "num")
    return (f"  {name}: accuracy (share above 0)"[:38], +1, "pct")
