"""The Train tab: a form for `tunewise sft`, `tunewise dpo` or `tunewise rlhf --rlhf_type kto|orpo|simpo|cpo|grpo|rm`
(the stage: tunewise.webui.stages), the exact command it runs (updated on every change), the form saved as / loaded
from YAML, Start / Stop of the run as a subprocess, its log and live loss / learning-rate plots read from the run's
logging.jsonl."""
from __future__ import annotations

from pathlib import Path

from tunewise.errors import UserError
from tunewise.webui.commands import (NUMBER_FIELDS, TRAIN_FIELDS, command_line, form_from_yaml, train_command,
                                     train_yaml)
from tunewise.webui.stages import DATA_BOXES, PICKED_FIELDS, STAGE_FLAGS, STAGES
from tunewise.webui.training import plot_frames

SCHEDULERS = ["cosine", "linear", "constant", "constant_with_warmup", "cosine_with_min_lr", "warmup_stable_decay"]
REPORT_TO = ["none", "tensorboard", "wandb", "swanlab"]
# boxes two stages share with different defaults: set to the stage's default when the user picks a stage
RESET_ON_STAGE = ("beta", "loss_type", "simpo_gamma", "cpo_alpha")


def upload_paths(files) -> list[str]:
    return [f if isinstance(f, str) else getattr(f, "name", str(f)) for f in (files or [])]


def preview(files, *values) -> str:
    """The command line Start would run, or why it would not start."""
    try:
        return command_line(*train_command(dict(zip(TRAIN_FIELDS, values)), upload_paths(files)))
    except UserError as e:
        return f"(not ready: {e})"


def stage_updates(name: str, defaults: bool) -> dict:
    """The Train form's changes for a stage, as field name -> gr.update keywords ("pref_box": the accordion of stage
    flags): its data box and its own flags shown, the others hidden, the loss types its command takes offered; with
    `defaults` (the user picked it), the boxes it shares with other stages set to its command's defaults and the
    fields it sets itself (KTO's batch of 2)."""
    stage = STAGES[name]
    changes = {box: {"visible": box == stage.data_box} for box in DATA_BOXES}
    changes["pref_box"] = {"visible": bool(stage.flags)}
    for flag in STAGE_FLAGS:
        changes[flag] = {"visible": flag in stage.flags}
        if defaults and flag in stage.flags and flag in RESET_ON_STAGE:
            changes[flag]["value"] = stage.default(flag)
    if stage.loss_types:
        changes["loss_type"]["choices"] = list(stage.loss_types)
    picks = dict(stage.picks) if defaults else {}
    changes.update({name: {"value": picks[name]} if name in picks else {} for name in PICKED_FIELDS})
    return changes


def build(T, args, job) -> None:
    import gradio as gr

    def start_training(files, *values):
        try:
            command, argv = train_command(dict(zip(TRAIN_FIELDS, values)), upload_paths(files))
        except UserError as e:
            return f"not started: {e}"
        return job.start(command, argv)

    def poll():
        records = job.records()
        run = job.run_dir()
        status = job.status() + (f" — {run}" if run else "")
        if not records:
            return status, job.log_text(), gr.skip(), gr.skip()
        loss, lr = plot_frames(records)
        return status, job.log_text(), loss, lr

    def save_yaml(path, files, *values):
        path = (path or "").strip()
        if not path:
            return "not saved: give a file name."
        try:
            text = train_yaml(dict(zip(TRAIN_FIELDS, values)), upload_paths(files), path)
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text, encoding="utf-8")
        except (UserError, OSError) as e:
            return f"not saved: {e}"
        return f"saved {path}\n" + text

    def load_yaml(path):
        path = path if isinstance(path, str) else getattr(path, "name", None)
        try:
            if not path:
                raise UserError("give a YAML file to load.")
            form = form_from_yaml(path)
        except UserError as e:
            return [f"not loaded: {e}"] + [gr.skip()] * (len(fields) + 1)
        values = [None if name in NUMBER_FIELDS and form[name] == "" else form[name] for name in TRAIN_FIELDS]
        values[TRAIN_FIELDS.index("loss_type")] = gr.update(
            choices=list(STAGES[form["stage"]].loss_types or STAGES["dpo"].loss_types), value=form["loss_type"])
        return [f"loaded {path}"] + values + [None]  # uploads are in --dataset now

    with gr.Row():
        with gr.Column(scale=3):
            with gr.Row():
                stage = T.make(gr.Radio, "train.stage", list(STAGES), value="sft", elem_id="train-stage")
                model = T.make(gr.Textbox, "train.model", args.model)
                train_type = T.make(gr.Radio, "train.train_type", ["lora", "full"], value="lora")
            with gr.Row():
                with gr.Column():
                    dataset = T.make(gr.Textbox, "train.dataset", "self_cognition#200, tiny_skills#400",
                                     elem_id="train-dataset")
                    pref_dataset = T.make(gr.Textbox, "train.pref_dataset", "concise", visible=False,
                                          elem_id="train-pref-dataset")
                    kto_dataset = T.make(gr.Textbox, "train.kto_dataset", "", visible=False,
                                         placeholder='rows.jsonl: {"messages": [...], "label": true}',
                                         elem_id="train-kto-dataset")
                    grpo_dataset = T.make(gr.Textbox, "train.grpo_dataset", "additions#200", visible=False,
                                          elem_id="train-grpo-dataset")
                    files = T.make(gr.File, "train.files", file_count="multiple", file_types=[".jsonl", ".json"],
                                   height=120)
                    model_name = T.make(gr.Textbox, "train.model_name", "小黄, Xiao Huang")
                    model_author = T.make(gr.Textbox, "train.model_author", "魔搭, ModelScope")
                with gr.Column():
                    epochs = T.make(gr.Number, "train.epochs", 5)
                    max_steps = T.make(gr.Number, "train.max_steps", -1, precision=0, elem_id="train-max-steps")
                    lr = T.make(gr.Textbox, "train.lr", "")
                    lora_rank = T.make(gr.Number, "train.lora_rank", 8, precision=0)
                    lora_alpha = T.make(gr.Number, "train.lora_alpha", 32, precision=0)
                    logging_steps = T.make(gr.Number, "train.logging_steps", 5, precision=0)
                    output_dir = T.make(gr.Textbox, "train.output_dir", args.output_dir)
            with T.make(gr.Accordion, "train.pref", open=True, visible=False, elem_id="train-pref") as pref_box:
                with gr.Row():
                    beta = T.make(gr.Number, "train.beta", STAGES["dpo"].default("beta"), elem_id="train-beta")
                    loss_type = T.make(gr.Dropdown, "train.loss_type", list(STAGES["dpo"].loss_types),
                                       value=STAGES["dpo"].default("loss_type"), allow_custom_value=True,
                                       elem_id="train-loss-type")
                    rpo_alpha = T.make(gr.Textbox, "train.rpo_alpha", "")
                with gr.Row():
                    desirable_weight = T.make(gr.Number, "train.desirable_weight", 1.0)
                    undesirable_weight = T.make(gr.Number, "train.undesirable_weight", 1.0)
                    simpo_gamma = T.make(gr.Number, "train.simpo_gamma", STAGES["simpo"].default("simpo_gamma"),
                                         elem_id="train-simpo-gamma")
                    cpo_alpha = T.make(gr.Number, "train.cpo_alpha", STAGES["simpo"].default("cpo_alpha"),
                                       elem_id="train-cpo-alpha")
                with gr.Row():
                    reward_funcs = T.make(gr.Textbox, "train.reward_funcs", "accuracy")
                    num_generations = T.make(gr.Number, "train.num_generations",
                                             STAGES["grpo"].default("num_generations"), precision=0)
                    max_completion_length = T.make(gr.Number, "train.max_completion_length",
                                                   STAGES["grpo"].default("max_completion_length"), precision=0)
                adapters = T.make(gr.Textbox, "train.adapters", "")
            with T.make(gr.Accordion, "train.more", open=False):
                with gr.Row():
                    scheduler = T.make(gr.Dropdown, "train.scheduler", SCHEDULERS, value="cosine")
                    warmup = T.make(gr.Textbox, "train.warmup", "")
                    save_steps = T.make(gr.Number, "train.save_steps", 50, precision=0)
                with gr.Row():
                    batch_size = T.make(gr.Textbox, "train.batch_size", "")
                    grad_accum = T.make(gr.Textbox, "train.grad_accum", "", elem_id="train-grad-accum")
                    max_length = T.make(gr.Number, "train.max_length", 2048, precision=0)
                with gr.Row():
                    system = T.make(gr.Textbox, "train.system", "")
                    report_to = T.make(gr.Dropdown, "train.report_to", REPORT_TO, value="none")
                extra = T.make(gr.Textbox, "train.extra", "", placeholder="--lora_dropout 0.1 --seed 7",
                               elem_id="train-extra")
            command = T.make(gr.Textbox, "train.preview", "", lines=2, interactive=False, elem_id="train-preview")
            with gr.Row():
                yaml_path = T.make(gr.Textbox, "train.yaml_path", str(Path(args.output_dir) / "webui-train.yaml"),
                                   scale=3, elem_id="train-yaml-path")
                save = T.make(gr.Button, "train.save_yaml", attr="value", scale=1, elem_id="train-save-yaml")
                load = T.make(gr.Button, "train.load_yaml", attr="value", scale=1, elem_id="train-load-yaml")
                upload = T.make(gr.UploadButton, "train.upload_yaml", file_types=[".yaml", ".yml"],
                                scale=1)
            yaml_status = T.make(gr.Textbox, "train.yaml_status", "", lines=2, max_lines=12, interactive=False,
                                 elem_id="train-yaml-status")
        with gr.Column(scale=2):
            with gr.Row():
                start = T.make(gr.Button, "train.start", attr="value", variant="primary", elem_id="train-start")
                stop = T.make(gr.Button, "train.stop", attr="value", variant="stop", elem_id="train-stop")
            status = T.make(gr.Textbox, "train.status", "idle", interactive=False, elem_id="train-status")
            # no initial (empty) data and fixed colors: a plot first drawn from an empty frame never shows its
            # colored lines in Gradio 6; poll() skips the update until there is a record
            loss_plot = T.make(gr.LinePlot, "train.loss", attr="title", x="step", y="value", color="series",
                               y_title="loss", height=220, color_map={"train loss": "#f97316", "eval loss": "#2563eb"})
            lr_plot = T.make(gr.LinePlot, "train.lr_plot", attr="title", x="step", y="value", color="series",
                             y_title="lr", height=220, color_map={"lr": "#f97316", "planned lr": "#9ca3af"})
            log = T.make(gr.Textbox, "train.log", "", lines=8, max_lines=8, interactive=False, elem_id="train-log")

    fields = [stage, model, train_type, dataset, pref_dataset, kto_dataset, grpo_dataset, model_name, model_author,
              system, epochs, max_steps, lr, scheduler, warmup, lora_rank, lora_alpha, batch_size, grad_accum,
              max_length, logging_steps, save_steps, output_dir, report_to, beta, loss_type, rpo_alpha,
              desirable_weight, undesirable_weight, simpo_gamma, cpo_alpha, reward_funcs, num_generations,
              max_completion_length, adapters, extra]
    assert len(fields) == len(TRAIN_FIELDS)
    inputs = [files] + fields
    # on load and on every change of any field (a load from YAML included)
    gr.on(None, preview, inputs, command, show_progress="hidden", trigger_mode="always_last")
    by_name = {**dict(zip(TRAIN_FIELDS, fields)), "pref_box": pref_box}
    shown = list(DATA_BOXES) + ["pref_box"] + list(STAGE_FLAGS) + list(PICKED_FIELDS)

    def on_stage(defaults: bool):
        return lambda name: [gr.update(**stage_updates(name, defaults)[key]) for key in shown]

    # shown and hidden on every change (a YAML load included); the shared boxes reset only when the user picks
    stage.change(on_stage(False), stage, [by_name[key] for key in shown])
    stage.input(on_stage(True), stage, [by_name[key] for key in shown])
    start.click(start_training, inputs, status)
    stop.click(lambda: job.stop(), None, status)
    save.click(save_yaml, [yaml_path] + inputs, yaml_status)
    load.click(load_yaml, yaml_path, [yaml_status] + fields + [files])
    upload.upload(load_yaml, upload, [yaml_status] + fields + [files])
    gr.Timer(2.0).tick(poll, None, [status, log, loss_plot, lr_plot], show_progress="hidden")
    return command
