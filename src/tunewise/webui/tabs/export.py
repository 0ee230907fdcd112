"""The Export tab: `tunewise export --adapters CKPT [--output_dir DIR]` as a subprocess; where the merged model was
written, or the command's error as it printed it."""
from __future__ import annotations

from tunewise.errors import UserError
from tunewise.webui.commands import command_line, export_argv, exported_path

EXPORT_FIELDS = ["adapters", "output_dir", "torch_dtype", "overwrite"]


def preview(*values) -> str:
    try:
        return command_line("export", export_argv(dict(zip(EXPORT_FIELDS, values))))
    except UserError as e:
        return f"(not ready: {e})"


def build(T, job, checkpoint_choices) -> list:
    """The tab; returns its checkpoint dropdown for the refresh button."""
    import gradio as gr

    from tunewise.webui.tabs.common import follow

    def run(*values):
        try:
            argv = export_argv(dict(zip(EXPORT_FIELDS, values)))
        except UserError as e:
            yield f"not started: {e}", "", ""
            return
        for status, log in follow(job, "export", argv):
            yield status, "", log
        yield status, exported_path(job.log_text(400)) or "", log

    def refresh(current):
        return gr.update(choices=checkpoint_choices(), value=current)

    choices = checkpoint_choices()
    with gr.Row():
        adapters = T.make(gr.Dropdown, "export.adapters", choices, value=choices[0] if choices else None,
                          allow_custom_value=True, scale=3, elem_id="export-adapters")
        refresh_button = T.make(gr.Button, "export.refresh", attr="value", size="sm", scale=1, elem_id="export-refresh")
    with gr.Row():
        output_dir = T.make(gr.Textbox, "export.output_dir", "", scale=3)
        torch_dtype = T.make(gr.Dropdown, "export.torch_dtype", ["auto", "float32", "bfloat16", "float16"], value="auto")
        overwrite = T.make(gr.Checkbox, "export.overwrite", value=False)
    command = T.make(gr.Textbox, "export.preview", "", lines=2, interactive=False, elem_id="export-preview")
    go = T.make(gr.Button, "export.run", attr="value", variant="primary", elem_id="export-run")
    status = T.make(gr.Textbox, "export.status", "idle", max_lines=12, interactive=False, elem_id="export-status")
    result = T.make(gr.Textbox, "export.result", "", interactive=False, elem_id="export-result")
    log = T.make(gr.Textbox, "export.log", "", lines=8, max_lines=20, interactive=False)
    fields = [adapters, output_dir, torch_dtype, overwrite]
    gr.on(None, preview, fields, command, show_progress="hidden", trigger_mode="always_last")
    go.click(run, fields, [status, result, log])
    refresh_button.click(refresh, adapters, adapters)
    return [adapters]
