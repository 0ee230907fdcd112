"""The retention watch: general skill and identity measured during training, not only after it.

Every `--retention_eval_steps N` optimizer steps (and once before the first step) the model answers a small
general-skill probe set with references (the embedded model: 50 of its held-out additions; any model:
`--retention_dataset`) and, when the run sets a new identity, the 16 held-out identity questions. The scores go to
logging.jsonl (`retention`, `retention_start`, `identity`, `identity_zh`, `identity_en`: names the identity cleanly,
as `tunewise eval` scores it; `identity_mentions`: only mentions it) and into loss.png. When
the general skill falls more than `--retention_threshold` below its value at the start, the watch warns; with
`--early_stop_on retention` it stops the run once `patience` probes in a row have been that low (a single low probe
can be a dip that recovers), and `best` is the checkpoint with the highest identity accuracy + retained share of
the general skill (a checkpoint is saved at every probe for that).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from transformers import TrainerCallback

from tunewise.plan.probes import IDENTITY_MAX_NEW_TOKENS, Probes

def measure(model, tokenizer, probes: Probes) -> dict:
    """{"retention": general accuracy, "identity", "identity_zh", "identity_en", "identity_mentions"} of a model
    (greedy, eval mode)."""
    import torch

    from tunewise.evaluate import identity
    from tunewise.models.generate import greedy_replies

    suite = probes.suite
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            replies = greedy_replies(model, tokenizer, [it.messages for it in suite.general], probes.max_new_tokens,
                                     probes.system)
            out = {"retention": sum(suite.general_correct(r, it.reference) for r, it in zip(replies, suite.general))
                   / len(suite.general)}
            if probes.has_identity:
                questions = identity.identity_questions()
                answers = greedy_replies(model, tokenizer, [[{"role": "user", "content": q["query"]}]
                                                            for q in questions], IDENTITY_MAX_NEW_TOKENS, probes.system)
                scores, _ = identity.score(answers, questions, suite.target, suite.old)
                out.update(identity=scores["identity_accuracy"], identity_zh=scores["identity_accuracy_zh"],
                           identity_en=scores["identity_accuracy_en"], identity_mentions=scores["identity_mentions"])
    finally:
        model.train(was_training)
    return out


def combined_score(record: dict) -> float:
    """identity accuracy + the share of the starting general skill kept (capped at 1): 0 to 2."""
    start = record["retention_start"]
    kept = min(1.0, record["retention"] / start) if start else 1.0
    return record.get("identity", 0.0) + kept


@dataclass
class RetentionWatch(TrainerCallback):
    """Runs the probes at the start and every `every` steps; warns or stops when the general skill drops."""

    probes: Probes
    tokenizer: object
    every: int
    threshold: float
    metrics: object  # tunewise.train.callbacks.MetricsLog: the records go to logging.jsonl
    best: object  # tunewise.train.callbacks.BestTracker
    stop: bool = False  # --early_stop_on retention
    patience: int = 2  # probes in a row past the threshold before it stops
    low_in_a_row: int = 0
    start: float | None = None  # the general accuracy before the first step (read back from the log on resume)
    history: list = field(default_factory=list)
    stopped: str | None = None  # the stop message, when the watch ended the run
    warned: bool = False
    seconds: float = 0.0

    def _probe(self, state, model) -> dict:
        began = time.perf_counter()
        record = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4),
                  **measure(model, self.tokenizer, self.probes)}
        took = time.perf_counter() - began
        self.seconds += took
        if self.start is None:
            self.start = record["retention"]
        record.update(retention_start=self.start, retention_s=round(took, 2))
        self.history.append(record)
        if state.is_world_process_zero:
            self.metrics.write(record)
        return record

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.start is None:
            self.start = next((r["retention_start"] for r in self.metrics.read() if "retention_start" in r), None)
        if state.global_step == 0 or self.start is None:
            self._probe(state, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        if step % self.every and step != state.max_steps:
            return
        record = self._probe(state, model)
        if self.stop:
            if self.probes.has_identity:
                self.best.consider(step, combined_score(record), "identity + retention")
            control.should_save = True  # the best by combined score must exist as a checkpoint
        drop = self.start - record["retention"]
        if drop <= self.threshold:
            self.low_in_a_row = 0
            return
        self.low_in_a_row += 1
        message = (f"retention watch: at step {step} the general-skill probes score {record['retention']:.3f}, "
                   f"{drop:.3f} below {self.start:.3f} at the start (threshold {self.threshold:g}")
        if self.stop and self.low_in_a_row >= self.patience:
            self.stopped = message + (f", {self.low_in_a_row} probes in a row). Stopping (--early_stop_on retention). "
                                      "A lower --learning_rate, fewer epochs or general data mixed into --dataset "
                                      "keep more.")
            control.should_training_stop = True
        elif not self.warned and state.is_world_process_zero:
            then = (f"the run stops if {self.patience} probes in a row are this low" if self.stop
                    else "--early_stop_on retention stops a run that stays this low")
            print(f"\nWARNING: {message}). The fine-tune is costing general skill; {then}.", flush=True)
            self.warned = True
