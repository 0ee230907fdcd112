"""What a sweep writes: the recommended trial, results.csv, results.md (table, rules, summary), loss_curves.png.

A trial record (trials/NAME/trial.json) is {"name", "status": "ok" | "failed", "values": {axis: value}, "argv",
"total_steps", "train_seconds", "eval_seconds", "loss": {label, start, final, ...}, "metrics": {identity_accuracy,
..., general_retention, repeated_ngram_share, copied_training_answer_share, ...}, "error"}.
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from tunewise.files import write_text_atomic
from tunewise.sweep.trend import RULE

MARK = "★ recommended"
STALLED = 10  # a converged trial whose final loss is over 10x the sweep's lowest is called out as stalled
RECOMMEND_RULE = ("**Recommended (★).** Among the trials that finished, did not diverge and answered at least one "
                  "identity question right: the highest identity accuracy; ties go to the higher general retention, then to less repetition (looping + parroting "
                  "shares), then to fewer optimizer steps.")
METRIC_RULES = (
    "**Identity** = share of the 16 held-out identity questions (8 Chinese, 8 English, phrased unlike the training "
    "rows) answered with the new name and author and without the old ones (`tunewise eval`). "
    "**Repetition** = share of all evaluation replies that loop a 4-gram 3 or more times / share of general-skill "
    "replies that parrot a training answer. "
    "**Retention** = the tuned model's accuracy on the held-out general-skill prompts divided by the base model's "
    "(measured once per sweep, with the same prompts and system prompt).")
CSV_METRICS = ("identity_accuracy", "identity_accuracy_zh", "identity_accuracy_en", "identity_claims_old",
               "general_accuracy", "general_accuracy_base", "general_retention", "repeated_ngram_share",
               "copied_training_answer_share", "hit_token_limit_share")


def _metric(rec: dict, key: str):
    return (rec.get("metrics") or {}).get(key)


def repetition(rec: dict) -> float:
    return (_metric(rec, "repeated_ngram_share") or 0.0) + (_metric(rec, "copied_training_answer_share") or 0.0)


def recommend(records: list[dict]) -> dict | None:
    """The trial RECOMMEND_RULE picks, or None when no trial qualifies."""
    ok = [r for r in records if r.get("status") == "ok" and (_metric(r, "identity_accuracy") or 0) > 0
          and (r.get("loss") or {}).get("label") != "diverged"]
    if not ok:
        return None
    return min(ok, key=lambda r: (-_metric(r, "identity_accuracy"), -(_metric(r, "general_retention") or 0.0),
                                  repetition(r), r.get("total_steps") or 0))


def _num(value, digits: int = 6):
    return "" if value is None else round(value, digits) if isinstance(value, float) else value


def write_csv(path: Path, records: list[dict], axes: list, best: dict | None) -> None:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["trial", "status", *(a.name for a in axes), "total_steps", "start_loss", "final_loss",
                     "loss_trend", *CSV_METRICS, "train_seconds", "eval_seconds", "recommended"])
    for r in records:
        loss = r.get("loss") or {}
        writer.writerow([r["name"], r["status"], *(r["values"].get(a.name, "") for a in axes), _num(r.get("total_steps")),
                         _num(loss.get("start")), _num(loss.get("final")), loss.get("label", ""),
                         *(_num(_metric(r, k)) for k in CSV_METRICS), _num(r.get("train_seconds"), 1),
                         _num(r.get("eval_seconds"), 1), "yes" if best is not None and r is best else ""])
    write_text_atomic(path, out.getvalue())


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.0f}%" if value in (0, 1) else f"{100 * value:.1f}%"


def _loss(value) -> str:
    return "-" if value is None else "nan" if not math.isfinite(value) else f"{value:.4g}"


def table(records: list[dict], axes: list, best: dict | None) -> list[str]:
    head = [a.header for a in axes] + ["steps", "final loss", "loss trend", "identity", "zh / en",
                                       "repetition (loop / parrot)", "retention", ""]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        cells = [r["values"].get(a.name, "") for a in axes] + [str(r.get("total_steps") or "-")]
        if r["status"] != "ok":
            cells += ["-", f"failed: {r.get('error', '')}"] + ["-"] * 4 + [""]
        else:
            m = r.get("metrics") or {}
            zh, en = m.get("identity_accuracy_zh"), m.get("identity_accuracy_en")
            retention = m.get("general_retention")
            cells += [_loss((r.get("loss") or {}).get("final")), (r.get("loss") or {}).get("label", "-"),
                      _pct(m.get("identity_accuracy")), f"{_pct(zh)} / {_pct(en)}",
                      f"{_pct(m.get('repeated_ngram_share'))} / {_pct(m.get('copied_training_answer_share'))}",
                      "-" if retention is None else f"{retention:.2f}",
                      f"**{MARK}**" if best is not None and r is best else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _point(rec: dict, axes: list) -> str:
    return ", ".join(f"{a.header} {rec['values'][a.name]}" for a in axes) or rec["name"]


def summary(records: list[dict], axes: list, best: dict | None, base: dict | None, total: int) -> str:
    """One paragraph: the recommended point and its numbers, the trends, the best point per value of the first
    axis, parroting, and the base model's numbers."""
    done = [r for r in records if r["status"] == "ok"]
    parts = []
    if len(records) < total:
        parts.append(f"Partial results: {len(records)} of {total} trials so far.")
    if best is None:
        unscored = done and all(_metric(r, "identity_accuracy") is None for r in done)
        parts.append("No trial qualifies for a recommendation" + (
            " (identity is not scored: give --model_name and --model_author)." if unscored else "."))
    else:
        m = best["metrics"]
        ret = m.get("general_retention")
        parts.append(f"Recommended: {_point(best, axes)} ({best.get('total_steps')} steps): identity "
                     f"{_pct(m.get('identity_accuracy'))} (zh {_pct(m.get('identity_accuracy_zh'))}, "
                     f"en {_pct(m.get('identity_accuracy_en'))}), general retention "
                     f"{'-' if ret is None else f'{ret:.2f}'}, repetition {_pct(m.get('repeated_ngram_share'))} looping"
                     f" / {_pct(m.get('copied_training_answer_share'))} parroting, loss "
                     f"{(best.get('loss') or {}).get('label', '-')}.")
    counts = {}
    for r in done:
        counts.setdefault((r.get("loss") or {}).get("label", "-"), []).append(r)
    if counts:
        parts.append("Loss: " + "; ".join(f"{label} in {len(rs)} ({', '.join(_point(r, axes) for r in rs[:6])}"
                                          f"{', …' if len(rs) > 6 else ''})" for label, rs in counts.items()) + ".")
    finals = [(r.get("loss") or {}).get("final") for r in done]
    lowest = min((f for f in finals if f is not None and math.isfinite(f)), default=None)
    stalled = [r for r, f in zip(done, finals) if lowest and (r.get("loss") or {}).get("label") == "converged"
               and f > STALLED * lowest]
    if stalled:
        parts.append(f"Of the converged, {', '.join(_point(r, axes) for r in stalled)} flattened at a final loss over "
                     f"{STALLED}× the lowest ({lowest:.3g}): with a decaying schedule the tail flattens as the learning "
                     "rate runs out, so read these as stalled (under-trained), not done.")
    if len(axes) > 1 and done:
        first = axes[0]
        best_per = []
        for value in first.values:
            group = [r for r in done if r["values"].get(first.name) == value]
            top = recommend(group)
            if top is not None:
                best_per.append(f"{first.header} {value}: {_pct(top['metrics'].get('identity_accuracy'))} at "
                                + ", ".join(f"{a.header} {top['values'][a.name]}" for a in axes[1:]))
        if best_per:
            parts.append("Best identity per " + first.header + ": " + "; ".join(best_per) + ".")
    parrots = [r for r in done if (_metric(r, "copied_training_answer_share") or 0) >= 0.1]
    if parrots:
        parts.append("Parroting training answers on ≥ 10 % of general prompts: "
                     + ", ".join(_point(r, axes) for r in parrots) + ".")
    failed = [r for r in records if r["status"] != "ok"]
    if failed:
        parts.append(f"Failed: {', '.join(r['name'] for r in failed)} (see trials/NAME/train.log).")
    if base:
        parts.append(f"The base model {base['model']}: identity {_pct(base.get('identity_accuracy'))}, general "
                     f"accuracy {_pct(base.get('general_accuracy'))} on {base.get('general_count')} prompts.")
    return " ".join(parts)


def write_markdown(path: Path, command: str, records: list[dict], axes: list, best: dict | None,
                   base: dict | None, total: int) -> None:
    lines = [f"# Sweep: {' × '.join(a.header for a in axes) or 'one trial'} ({total} trials)", "",
             "```bash", command, "```", "", *table(records, axes, best), "",
             summary(records, axes, best, base, total), "", "![loss curves](loss_curves.png)", "",
             "How to read the table:", "", f"- {RULE}", f"- {METRIC_RULES}", f"- {RECOMMEND_RULE}",
             "- Every trial is a plain `tunewise sft` run in `trials/NAME/` (its `train.log`, `logging.jsonl`, "
             "checkpoints) with its evaluation in `trials/NAME/eval.json`; `results.csv` has every number.", ""]
    write_text_atomic(path, "\n".join(lines))


def plot_curves(path: Path, records: list[dict], axes: list, logs: dict[str, list[dict]]) -> None:
    """Training loss of every trial, log-y; with two or more axes one panel per value of the first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(f"{axes[0].header} {v}", [r for r in records if r["values"].get(axes[0].name) == v])
              for v in axes[0].values] if len(axes) > 1 else [("training loss", records)]
    panels = [(title, rs) for title, rs in panels if rs]
    fig, axs = plt.subplots(1, max(1, len(panels)), figsize=(4.2 * max(1, len(panels)) + 1, 3.8), sharey=True,
                            squeeze=False)
    for ax, (title, rs) in zip(axs[0], panels):
        for r in rs:
            points = [(e["step"], e["loss"]) for e in logs.get(r["name"], []) if "loss" in e and e["loss"] > 0]
            if points:
                label = ", ".join(f"{a.header} {r['values'][a.name]}" for a in (axes[1:] if len(axes) > 1 else axes))
                ax.plot(*zip(*points), lw=1.2, label=label or r["name"])
        ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3, which="both")
        if ax.lines:
            ax.legend(fontsize=7)
    axs[0][0].set_ylabel("training loss (log)")
    from tunewise.train.plots import save_figure

    save_figure(fig, path)
    plt.close(fig)
