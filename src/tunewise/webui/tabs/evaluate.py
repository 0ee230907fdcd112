"""The Evaluate tab: `tunewise eval` of a checkpoint, run directory or model (A), optionally --compare B, run as a
subprocess; its table is read from the report file it writes (--output), its text report shown beside it, and a
failure's error shown as the command printed it."""
from __future__ import annotations

import json
from pathlib import Path

from tunewise.errors import UserError
from tunewise.webui.commands import command_line, eval_argv
from tunewise.webui.i18n import TEXT, t

EVAL_FIELDS = ["a", "b", "model_name", "model_author", "max_new_tokens", "dataset", "preference_dataset",
               "retention_baseline", "output"]


def metric_label(key: str, lang: str) -> str:
    from tunewise.evaluate.report import METRICS

    indent = "  " if METRICS[key][0].startswith("  ") else ""
    return indent + t(f"metric.{key}", lang) if f"metric.{key}" in TEXT else METRICS[key][0]


def eval_table(report: dict, lang: str = "en") -> tuple[list[str], list[list[str]]]:
    """(headers, rows) of a `tunewise eval --output` report: metric, A, B, better for two models; metric, value for
    one. Metrics neither model has are left out."""
    from tunewise.evaluate.report import METRICS, compare_metrics, format_metric

    models = report["models"]
    if len(models) == 1:
        metrics = models[0]["metrics"]
        rows = [[metric_label(k, lang), format_metric(metrics[k], kind)] for k, (_, _, kind) in METRICS.items()
                if metrics.get(k) is not None]
        return [t("col.metric", lang), f"{t('col.value', lang)}: {models[0]['label']}"], rows
    comparison = report.get("comparison") or compare_metrics(models[0]["metrics"], models[1]["metrics"])
    kind = {key: k for key, (_, _, k) in METRICS.items()}
    rows = [[metric_label(r["metric"], lang), format_metric(r["a"], kind[r["metric"]]),
             format_metric(r["b"], kind[r["metric"]]), r["better"] or ""] for r in comparison]
    return [t("col.metric", lang), f"A: {models[0]['label']}", f"B: {models[1]['label']}", t("col.better", lang)], rows


def preview(*values) -> str:
    try:
        return command_line("eval", eval_argv(dict(zip(EVAL_FIELDS, values))))
    except UserError as e:
        return f"(not ready: {e})"


def build(T, args, job, model_choices) -> list:
    """The tab; returns its checkpoint dropdowns (A, B) for the refresh button."""
    import gradio as gr

    from tunewise.webui.i18n import lang_code

    def run(lang, *values):
        form = dict(zip(EVAL_FIELDS, values))
        try:
            argv = eval_argv(form)
        except UserError as e:
            yield f"not started: {e}", "", gr.skip()
            return
        from tunewise.webui.tabs.common import follow

        for status, log in follow(job, "eval", argv):
            yield status, log, gr.skip()
        if job.proc is None or job.running or job.proc.returncode != 0:
            return
        try:
            report = json.loads(Path(form["output"]).read_text(encoding="utf-8"))
            headers, rows = eval_table(report, lang_code(lang))
        except (OSError, ValueError, KeyError) as e:
            yield f"finished, but its report {form['output']} cannot be read: {e}", job.log_text(200), gr.skip()
            return
        yield status, log, gr.update(value=rows, headers=headers)

    def refresh(a, b):
        choices = model_choices()
        return gr.update(choices=choices, value=a), gr.update(choices=choices, value=b)

    choices = model_choices()
    with gr.Row():
        a = T.make(gr.Dropdown, "eval.a", choices, value=choices[0], allow_custom_value=True, elem_id="eval-a")
        b = T.make(gr.Dropdown, "eval.b", choices, value=None, allow_custom_value=True, elem_id="eval-b")
    refresh_button = T.make(gr.Button, "eval.refresh", attr="value", size="sm")
    with gr.Row():
        model_name = T.make(gr.Textbox, "eval.model_name", "")
        model_author = T.make(gr.Textbox, "eval.model_author", "")
        max_new_tokens = T.make(gr.Number, "eval.max_new_tokens", 128, precision=0)
    with gr.Row():
        dataset = T.make(gr.Textbox, "eval.dataset", "")
        preference = T.make(gr.Textbox, "eval.preference_dataset", "")
        baseline = T.make(gr.Checkbox, "eval.retention_baseline", value=True)
    output = T.make(gr.Textbox, "eval.output", str(Path(args.output_dir) / "webui-eval.json"))
    command = T.make(gr.Textbox, "eval.preview", "", lines=2, interactive=False, elem_id="eval-preview")
    with gr.Row():
        go = T.make(gr.Button, "eval.run", attr="value", variant="primary", elem_id="eval-run")
        stop = T.make(gr.Button, "eval.stop", attr="value", variant="stop")
    status = T.make(gr.Textbox, "eval.status", "idle", lines=1, max_lines=12, interactive=False, elem_id="eval-status")
    table = T.make(gr.Dataframe, "eval.table", headers=[t("col.metric"), t("col.value")], interactive=False,
                   wrap=True, elem_id="eval-table")
    log = T.make(gr.Textbox, "eval.log", "", lines=12, max_lines=30, interactive=False)
    fields = [a, b, model_name, model_author, max_new_tokens, dataset, preference, baseline, output]
    gr.on(None, preview, fields, command, show_progress="hidden", trigger_mode="always_last")
    go.click(run, [T.language] + fields, [status, log, table])
    stop.click(lambda: job.stop(), None, status)
    refresh_button.click(refresh, [a, b], [a, b])
    return [a, b]
