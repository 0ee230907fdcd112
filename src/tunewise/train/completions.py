"""--log_completions: GRPO's sampled completions, with each reward and the advantage, appended to
RUN_DIR/completions.jsonl at every logging step (ms-swift writes a completions.jsonl too; TRL prints the table and
writes it to a parquet file in the trainer's output folder, which is tunewise's staging folder).

One JSON object per completion: {"step", "split": "train" | "eval", "prompt", "completion", "rewards": {name:
value}, "advantage"} (+ the columns a reward logged with TRL's `log_extra`). What is written at a logging step is
what TRL's table holds then: the completions of the last generation round (gathered from every process), so with
--logging_steps above the rounds' length the rounds in between are not written; a round logged twice (--logging_steps
below it) is written once.
"""
from __future__ import annotations

import json
from pathlib import Path

from transformers import TrainerCallback

from tunewise.train import rundir

FILE = "completions.jsonl"


class CompletionsLog(TrainerCallback):
    """Writes the GRPO trainer's completion table (its `_logs`, TRL 1.16) on the main process at each log event."""

    def __init__(self, path: Path, resume_step: int | None = None):
        self.path = Path(path)
        self.resume_step = resume_step
        self.trainer = None
        self._last: list | None = None

    def attach(self, trainer) -> None:
        """The trainer whose completions are written (callbacks are made before it)."""
        if not hasattr(trainer, "_logs"):
            raise TypeError(f"--log_completions: {type(trainer).__name__} keeps no completion table")
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        if self.resume_step is not None and state.is_world_process_zero:
            rundir.truncate_log(self.path, self.resume_step)  # a resumed run writes those steps again

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or self.trainer is None or not logs:
            return
        split = "eval" if any(k.startswith("eval_") for k in logs) else "train"
        rows = table_rows(self.trainer._logs)
        key = [(r["prompt"], r["completion"], r["advantage"]) for r in rows]
        if not rows or key == self._last:
            return
        self._last = key
        with self.path.open("a", encoding="utf-8") as f:  # one write: a crash leaves at most a torn last line
            f.write("".join(json.dumps({"step": state.global_step, "split": split, **r}, ensure_ascii=False,
                                       default=str) + "\n" for r in rows))


def table_rows(logs: dict) -> list[dict]:
    """TRL's completion table as one record per completion."""
    prompts, completions, advantages = list(logs["prompt"]), list(logs["completion"]), list(logs["advantages"])
    rewards = {name: list(values) for name, values in logs["rewards"].items()}
    extra = {name: list(values) for name, values in logs.get("extra", {}).items()}
    rows = []
    for i, (prompt, completion) in enumerate(zip(prompts, completions)):
        row = {"prompt": prompt, "completion": completion,
               "rewards": {name: _number(values[i]) for name, values in rewards.items() if i < len(values)},
               "advantage": _number(advantages[i]) if i < len(advantages) else None}
        row.update({name: values[i] for name, values in extra.items() if i < len(values)})
        rows.append(row)
    return rows


def _number(value):
    """A reward or advantage as JSON takes it: NaN (a reward that returned None) as null."""
    value = float(value)
    return None if value != value else value
