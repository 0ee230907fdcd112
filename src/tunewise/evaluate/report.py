"""One model through every check (identity, general skills, repetition, loss), two side by side, and the table.

`evaluate_model(model, tokenizer, suite, system)` returns {"metrics": {...}, "identity": [...], "general": [...],
"repetition_examples": {...}} (and "rewards": [...] with --reward_funcs); `compare_metrics(a, b)` says which is
better on each metric; `format_report` prints.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from tunewise.evaluate.identity import Identity

# metric -> (label on screen, direction: +1 higher is better, -1 lower is better, 0 information only, format)
METRICS = {
    "identity_accuracy": ("identity accuracy (names it cleanly)", +1, "pct"),
    "identity_accuracy_zh": ("  Chinese questions", +1, "pct"),
    "identity_accuracy_en": ("  English questions", +1, "pct"),
    "identity_mentions": ("  mentions it (any wording)", 0, "pct"),
    "identity_mentions_zh": ("    Chinese questions", 0, "pct"),
    "identity_mentions_en": ("    English questions", 0, "pct"),
    "identity_claims_old": ("claims the old identity", -1, "pct"),
    "general_accuracy": ("general skill accuracy", +1, "pct"),
    "general_accuracy_base": ("  same, base model", 0, "pct"),
    "general_retention": ("  retained (tuned / base)", +1, "ratio"),
    "repeated_ngram_share": ("replies with a looping 4-gram", -1, "pct"),
    "copied_training_answer_share": ("general replies parroting training", -1, "pct"),
    "hit_token_limit_share": ("replies cut at the token limit", -1, "pct"),
    "preference_reply_accuracy": ("preference: replies siding with chosen", +1, "pct"),
    "preference_ranking_accuracy": ("  log p ranks chosen first", +1, "pct"),
    "preference_implicit_reward_accuracy": ("  implicit reward ranks chosen first", +1, "pct"),
    "loss": ("loss (assistant tokens)", -1, "num"),
    "perplexity": ("perplexity", -1, "num"),
}


@dataclass
class GeneralItem:
    messages: list[dict]
    reference: str


@dataclass
class Suite:
    """What every evaluated model is asked and how it is scored."""

    target: Identity
    old: Identity | None = None
    general: list[GeneralItem] = field(default_factory=list)
    general_kind: str = "none"  # "heldout_addition" | "dataset:exact" | "dataset:contains" | "none"
    training_responses: list[str] = field(default_factory=list)
    loss_conversations: list = field(default_factory=list)  # tunewise.data.formats.Conversation
    max_new_tokens: int = 128
    max_length: int = 2048
    batch_size: int = 50
    rewards: object = None  # tunewise.evaluate.rewards.RewardSuite: GRPO's rewards on held-out prompts

    def general_correct(self, reply: str, reference: str) -> bool:
        from tunewise.evaluate.repetition import normalize
        from tunewise.evaluate.skills import addition_correct

        if self.general_kind == "heldout_addition":
            return addition_correct(reply, reference)
        if self.general_kind == "dataset:exact":
            return normalize(reply) == normalize(reference)
        return normalize(reference) in normalize(reply)


def addition_items() -> list[GeneralItem]:
    from tunewise.evaluate.skills import addition_eval_set

    return [GeneralItem([{"role": "user", "content": it["query"]}], it["reference"]) for it in addition_eval_set()]


def dataset_items(specs: list[str], seed: int = 42) -> list[GeneralItem]:
    """{query, response} (or messages) rows: the conversation up to the last reply is asked, that reply is the
    reference."""
    from tunewise.data.formats import load_conversations

    return [GeneralItem(c.messages[:-1], c.messages[-1]["content"]) for c in load_conversations(specs, seed=seed)]


def evaluate_model(model, tokenizer, suite: Suite, system: str | None = None, base_model=None) -> dict:
    """Every check on one model. `base_model`: a callable returning a context manager that yields the base model
    (the LoRA adapter disabled, or the base loaded), to measure how much of the general skill the fine-tune kept."""
    from tunewise.evaluate import identity, repetition
    from tunewise.models.generate import greedy_generations

    questions = identity.identity_questions()
    gen = lambda convs: greedy_generations(model, tokenizer, convs, suite.max_new_tokens, system, suite.batch_size)
    id_gens = gen([[{"role": "user", "content": q["query"]}] for q in questions])
    id_metrics, verdicts = identity.score([g.text for g in id_gens], questions, suite.target, suite.old)
    metrics = dict(id_metrics) if suite.target else {k: None for k in id_metrics}
    result = {"identity": [{**q, "reply": g.text, "finish_reason": g.finish_reason, **v}
                           for q, g, v in zip(questions, id_gens, verdicts)]}

    general_gens = gen([it.messages for it in suite.general]) if suite.general else []
    correct = [suite.general_correct(g.text, it.reference) for g, it in zip(general_gens, suite.general)]
    metrics["general_accuracy"] = sum(correct) / len(correct) if correct else None
    metrics["general_accuracy_base"] = metrics["general_retention"] = None
    if base_model is not None and suite.general:
        with base_model() as base:
            base_gens = greedy_generations(base, tokenizer, [it.messages for it in suite.general],
                                           suite.max_new_tokens, system, suite.batch_size)
        base_acc = sum(suite.general_correct(g.text, it.reference) for g, it in zip(base_gens, suite.general)) / len(base_gens)
        metrics["general_accuracy_base"] = base_acc
        metrics["general_retention"] = metrics["general_accuracy"] / base_acc if base_acc else None
    result["general"] = [{"messages": it.messages, "reference": it.reference, "reply": g.text, "correct": ok,
                          "finish_reason": g.finish_reason} for it, g, ok in zip(suite.general, general_gens, correct)]

    if suite.rewards is not None:
        from tunewise.evaluate import rewards

        asked = [r.messages for r in suite.rewards.rows]
        reward_gens = general_gens if asked == [it.messages for it in suite.general] else gen(asked)
        reward_metrics, result["rewards"] = rewards.score(suite.rewards, reward_gens, tokenizer)
        metrics.update(reward_metrics)

    rep, examples = repetition.repetition_metrics(id_gens + general_gens, [g.text for g in general_gens],
                                                  suite.training_responses, [it.reference for it in suite.general])
    metrics.update(rep)
    result["repetition_examples"] = examples

    metrics["loss"] = metrics["perplexity"] = None
    if suite.loss_conversations:
        from tunewise.data.encode import encode_dataset
        from tunewise.evaluate.loss import dataset_loss

        rows, _ = encode_dataset(tokenizer, suite.loss_conversations, system, suite.max_length, "left")
        metrics.update(dataset_loss(model, tokenizer, rows))
    result["metrics"] = metrics
    return result


def metric_specs(*metrics: dict) -> dict:
    """METRICS, and the rewards/<name>/<stat> metrics of the given metric dicts after them."""
    from tunewise.evaluate.rewards import metric_spec

    found = dict.fromkeys(k for m in metrics for k in m if k.startswith("rewards/"))
    return {**METRICS, **{k: metric_spec(k) for k in found}}


def compare_metrics(a: dict, b: dict) -> list[dict]:
    """[{"metric", "a", "b", "better": "A" | "B" | "tie" | None}] for the metrics both models have."""
    rows = []
    for key, (_, direction, _) in metric_specs(a, b).items():
        va, vb = a.get(key), b.get(key)
        if va is None and vb is None:
            continue
        better = None
        if direction and va is not None and vb is not None:
            diff = (va - vb) * direction
            better = "tie" if abs(va - vb) <= 1e-9 * max(1.0, abs(va), abs(vb)) else ("A" if diff > 0 else "B")
        rows.append({"metric": key, "a": va, "b": vb, "better": better})
    return rows


def format_metric(value, kind: str) -> str:
    """A metric's value as the reports show it: a percentage, a ratio or a number; "-" when it is missing."""
    if value is None:
        return "-"
    if kind == "pct":
        return f"{100 * value:.1f}%"
    if kind == "ratio":
        return f"{value:.2f}"
    return f"{value:.4g}"


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _mark(verdict: dict) -> str:
    """ok: names the identity cleanly; ~: mentions it, garbled (小黄搭, named twice); no: neither."""
    return "ok" if verdict["correct"] else "~" if verdict.get("mentions") else "no"


def format_report(report: dict) -> str:
    """The on-screen table for one model, or two side by side with the better one on each metric."""
    models = report["models"]
    lines = []
    target, old = report.get("target_identity") or {}, report.get("old_identity") or {}
    if any(target.values()):
        lines.append(f"target identity: {' / '.join(target['model_name'])}, by {' / '.join(target['model_author'])}"
                     + (f"   old: {' / '.join(old['model_name'])}, by {' / '.join(old['model_author'])}"
                        if any(old.values()) else ""))
    else:
        lines.append("identity not scored: give --model_name/--model_author (or --adapters of a run that set them)")
    lines.append(f"general skill: {report['general']['kind']} ({report['general']['count']} prompts)")
    if report.get("rewards"):
        r = report["rewards"]
        lines.append(f"rewards: {', '.join(r['funcs'])} on {r['prompts']} ({r['count']} prompts, greedy replies)")
    for tag, m in zip("AB", models):
        lines.append(f"{tag}: {m['label']}" if len(models) > 1 else f"model: {m['label']}")
    lines.append("")
    if len(models) == 1:
        metrics = models[0]["metrics"]
        for key, (label, _, kind) in metric_specs(metrics).items():
            if metrics.get(key) is not None:
                lines.append(f"  {label:<38} {format_metric(metrics[key], kind):>10}")
        lines.append("")
        for row in models[0]["identity"][:2] + models[0]["identity"][8:10]:
            lines.append(f"  {_mark(row):<3}{_short(row['query'], 24):<24} -> {_short(row['reply'], 70)}")
        return "\n".join(lines)

    comparison = report["comparison"]
    specs = metric_specs(*(m["metrics"] for m in models))
    lines.append(f"  {'metric':<38} {'A':>10} {'B':>10}  better")
    for row in comparison:
        label, _, kind = specs[row["metric"]]
        lines.append(f"  {label:<38} {format_metric(row['a'], kind):>10} {format_metric(row['b'], kind):>10}  {row['better'] or ''}")
    wins = {t: sum(r["better"] == t for r in comparison) for t in ("A", "B", "tie")}
    lines.append(f"  summary: A better on {wins['A']}, B better on {wins['B']}, tied on {wins['tie']} metrics")
    lines.append("")
    lines.append("identity questions, side by side (ok = names the target cleanly and not the old identity; "
                 "~ = mentions it, garbled):")
    for ra, rb in zip(models[0]["identity"], models[1]["identity"]):
        lines.append(f"  {ra['query']}")
        for tag, r in (("A", ra), ("B", rb)):
            lines.append(f"    {tag} {_mark(r):<2}  {_short(r['reply'], 80)}")
    differ = [(ga, gb) for ga, gb in zip(models[0]["general"], models[1]["general"]) if ga["correct"] != gb["correct"]]
    if differ:
        lines.append(f"general prompts answered differently ({len(differ)}; first 5):")
        for ga, gb in differ[:5]:
            lines.append(f"  {_short(ga['messages'][-1]['content'], 30)}  (expected {_short(ga['reference'], 20)})")
            for tag, r in (("A", ga), ("B", gb)):
                lines.append(f"    {tag} {'ok' if r['correct'] else 'no'}  {_short(r['reply'], 80)}")
    return "\n".join(lines)
