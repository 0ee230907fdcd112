"""The evaluation flags of a training run: the validation loss and early stopping on it, and the retention watch
(general-skill and identity probes scored during training, and stopping when the general skill falls)."""
from __future__ import annotations

from dataclasses import dataclass

from tunewise.flags import below_minimum, flag_field, not_one_of

EARLY_STOP_ON = ("eval_loss", "retention")


@dataclass(frozen=True)
class EvaluationArgs:
    eval_steps: int = flag_field(50, "evaluate every N optimizer steps (when there is validation data)")
    early_stop_patience: int | None = flag_field(None, "stop after K evaluations without a lower eval loss (with --early_stop_on "
                                               "retention: after K probes in a row past the threshold, default 2)")
    retention_eval_steps: int = flag_field(0, "every N optimizer steps (and before the first) score general-skill and identity "
                                      "probes, log them and plot them with the loss (0: off)")
    retention_dataset: list[str] = flag_field([], "general-skill probes for the retention watch: {query, response} rows, right "
                                          "when the reply contains the response (default for the built-in model: 50 "
                                          "of its held-out additions)", split_commas=True)
    retention_threshold: float = flag_field(0.05, "warn (or stop, see --early_stop_on) when the general-skill probes fall "
                                          "more than this below their score at the start")
    retention_max_new_tokens: int = flag_field(64, "longest reply to a --retention_dataset probe")
    early_stop_on: str = flag_field("eval_loss", "eval_loss (with --early_stop_patience) | retention: stop when the "
                                         "retention watch sees the general skill stay past --retention_threshold "
                                         "for --early_stop_patience probes (default 2), keeping as best the "
                                         "checkpoint with the highest identity + retention")

    def evaluation_problems(self) -> list[str]:
        problems = not_one_of(self, {"early_stop_on": EARLY_STOP_ON})
        problems += below_minimum(self, ("eval_steps", "retention_max_new_tokens"))
        if self.early_stop_on == "retention" and self.retention_eval_steps <= 0:
            problems.append("--early_stop_on retention needs --retention_eval_steps N (how often to probe).")
        if self.retention_eval_steps < 0:
            problems.append(f"--retention_eval_steps {self.retention_eval_steps}: must be 0 (off) or more.")
        if not 0 <= self.retention_threshold <= 1:
            problems.append(f"--retention_threshold {self.retention_threshold}: must be in [0, 1] (an accuracy drop).")
        if self.retention_dataset and not self.retention_eval_steps:
            problems.append("--retention_dataset is only read by the retention watch: give --retention_eval_steps N.")
        if self.early_stop_patience is not None and self.early_stop_patience < 1:
            problems.append(f"--early_stop_patience {self.early_stop_patience}: must be at least 1.")
        return problems
