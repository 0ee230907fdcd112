"""The command lines the web UI's forms run: `tunewise sft`, `tunewise dpo` or `tunewise rlhf --rlhf_type TYPE` from
the Train form (its stages: tunewise.webui.stages), `tunewise eval` from Evaluate, `tunewise export` from Export; the
exact line each would run (the live preview), and the Train form saved as / loaded from the YAML that
`tunewise sft|dpo|rlhf --config FILE` reads.

Everything here is pure (no Gradio): a form is a dict of field name -> value, as the tabs hand them over.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

from tunewise.errors import UserError
from tunewise.models.checkpoint import checkpoint_of, is_checkpoint
from tunewise.webui.stages import Stage, stage_of

# the Train form's fields, in the order the Train tab hands their values over
TRAIN_FIELDS = ["stage", "model", "train_type", "dataset", "pref_dataset", "kto_dataset", "grpo_dataset", "model_name",
                "model_author", "system", "num_train_epochs", "max_steps", "learning_rate", "lr_scheduler_type",
                "warmup_ratio", "lora_rank", "lora_alpha", "per_device_train_batch_size", "gradient_accumulation_steps",
                "max_length", "logging_steps", "save_steps", "output_dir", "report_to", "beta", "loss_type",
                "rpo_alpha", "desirable_weight", "undesirable_weight", "simpo_gamma", "cpo_alpha", "reward_funcs",
                "num_generations", "max_completion_length", "adapters", "extra"]
# form fields that are flags of the same name with one value, in the order they are written (then the stage's own)
SCALAR_FLAGS = ("num_train_epochs", "max_steps", "learning_rate", "lr_scheduler_type", "warmup_ratio", "lora_rank",
                "lora_alpha", "per_device_train_batch_size", "gradient_accumulation_steps", "max_length",
                "logging_steps", "save_steps", "system", "output_dir")
LIST_FIELDS = ("model_name", "model_author")  # "Chinese, English" in one textbox
COMMA_FIELDS = ("reward_funcs",)  # "accuracy, format" in one textbox, written as one comma list
FLOAT_FLAGS = ("num_train_epochs", "learning_rate", "warmup_ratio", "beta", "rpo_alpha", "desirable_weight",
               "undesirable_weight", "simpo_gamma", "cpo_alpha")  # written as given
NUMBER_FIELDS = {"num_train_epochs": float, "max_steps": int, "lora_rank": int, "lora_alpha": int,
                 "max_length": int, "logging_steps": int, "save_steps": int, "beta": float, "desirable_weight": float,
                 "undesirable_weight": float, "simpo_gamma": float, "cpo_alpha": float, "num_generations": int,
                 "max_completion_length": int}  # gr.Number fields


def command_line(command: str, argv: list[str]) -> str:
    """What the user would type: `tunewise COMMAND ARGV...`, quoted for a POSIX shell."""
    return shlex.join(["tunewise", command, *argv])


def _split(text) -> list[str]:
    return [part.strip() for part in str(text or "").split(",") if part.strip()]


def _flag_value(key: str, value) -> str:
    if isinstance(value, float) and value.is_integer() and key not in FLOAT_FLAGS:
        value = int(value)  # a gr.Number hands over 5.0 for 5
    if key in COMMA_FIELDS:
        return ",".join(_split(value))
    return str(value.strip() if isinstance(value, str) else value)


def _empty(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def train_command(form: dict, uploads: list[str] = ()) -> tuple[str, list[str]]:
    """(command, flags) of the Train form: `sft`, `dpo`, or `rlhf --rlhf_type TYPE` (tunewise.webui.stages), with the
    stage's data box and its own flags. Empty fields are left to the command's defaults; uploaded files are added to
    the dataset list."""
    stage = stage_of(form.get("stage"))
    argv = ["--model", form.get("model") or "tunewise-tiny", "--train_type", form.get("train_type") or "lora"]
    datasets = _split(form.get(stage.data_box)) + [str(u) for u in uploads]
    if not datasets:
        raise UserError(f"Give a dataset: upload a .jsonl/.json file or name one ({stage.data_hint}).")
    argv += ["--dataset", *datasets]
    for key in LIST_FIELDS:
        if values := _split(form.get(key)):
            argv += [f"--{key}", *values]
    for key in SCALAR_FLAGS + stage.flags:
        if not _empty(value := form.get(key)):
            argv += [f"--{key}", _flag_value(key, value)]
    if form.get("report_to"):
        argv += ["--report_to", form["report_to"]]
    if extra := str(form.get("extra") or "").strip():
        try:
            argv += shlex.split(extra)
        except ValueError as e:
            raise UserError(f"other flags: {e} in {extra!r}.") from None
    return stage.command[0], [*stage.command[1:], *argv]


def sft_argv(form: dict, uploads: list[str] = ()) -> list[str]:
    """`tunewise sft` flags of the Train form (its stage set to sft)."""
    return train_command({**form, "stage": "sft"}, uploads)[1]


def stage_flags(form: dict, uploads: list[str] = ()) -> tuple[Stage, list[str]]:
    """The form's stage and the flags its command's argument class reads (`rlhf`'s --rlhf_type left out)."""
    stage = stage_of(form.get("stage"))
    return stage, train_command(form, uploads)[1][len(stage.command) - 1:]


# -- YAML: the format `--config` reads (tunewise.flags): a mapping of flag names to values --

HEADER = "# tunewise web UI, Train form; run the same with:\n#   tunewise {command} --config {path}\n"
HEADER_COMMAND = re.compile(r"^#.*\btunewise (?:rlhf --rlhf_type (\w+)|(\w+)) --config", flags=re.M)


def train_yaml(form: dict, uploads: list[str] = (), path: str = "FILE.yaml") -> str:
    """The Train form as YAML for `tunewise sft|dpo|rlhf --rlhf_type TYPE --config`: the flags the form passes,
    checked and typed as the command reads them (a problem, such as an unknown flag in 'other flags', is a
    UserError)."""
    import yaml

    from tunewise.flags import parse

    stage, argv = stage_flags(form, uploads)
    args, sources, _ = parse(stage.args_class, argv)
    data = {name: getattr(args, name) for name, source in sources.items() if source == "flag"}
    body = yaml.safe_dump(data, allow_unicode=True, sort_keys=False, default_flow_style=False)
    return HEADER.format(command=" ".join(stage.command), path=shlex.quote(str(path))) + body


# a hand-written config without the header: its stage from the keys only one kind of run has, first match wins
STAGE_KEYS = (("grpo", ("reward_funcs", "reward_weights", "reward_model", "num_generations", "external_plugins")),
              ("kto", ("desirable_weight", "undesirable_weight")),
              ("cpo", ("cpo_alpha", "simpo_gamma")),
              ("dpo", ("beta", "loss_type", "loss_weights", "rpo_alpha", "label_smoothing", "ref_model", "adapters")))


def yaml_stage(text: str, keys) -> str:
    """The stage a config is for: the one its header names, else the one its keys belong to, else sft."""
    if named := HEADER_COMMAND.search(text):
        return named.group(1) or named.group(2)
    return next((stage for stage, names in STAGE_KEYS if any(k in keys for k in names)), "sft")


def form_from_yaml(path: str) -> dict:
    """The Train form filled from a YAML config (the one train_yaml writes, or any `--config` file), checked as
    `tunewise sft|dpo|rlhf --config PATH` checks it: known fields go to their boxes, every other key to 'other
    flags'; the stage's own boxes that the file leaves out show the command's defaults."""
    import yaml

    from tunewise.flags import parse

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise UserError(f"{path}: cannot read it ({e.strerror}).") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        data = None  # parse() below reports where
    data = {str(k).replace("-", "_"): v for k, v in data.items()} if isinstance(data, dict) else {}
    stage = stage_of(yaml_stage(text, data))
    parse(stage.args_class, ["--config", str(path)])  # unknown keys, types, values: a UserError naming the file

    def values(v) -> list[str]:
        return [str(x).lower() if isinstance(x, bool) else str(x) for x in (v if isinstance(v, list) else [v])]

    form = {key: "" for key in TRAIN_FIELDS}
    form.update({flag: stage.default(flag) for flag in stage.flags}, stage=stage.name, report_to="tensorboard")
    one_value = ("model", "train_type", "report_to") + tuple(f for f in ("loss_type", "adapters") if f in stage.flags)
    boxes = SCALAR_FLAGS + tuple(f for f in stage.flags if f not in one_value)
    extra = []
    for key, value in data.items():
        if key == "dataset":
            form[stage.data_box] = ", ".join(values(value))
        elif key in LIST_FIELDS or (key in COMMA_FIELDS and key in stage.flags):
            form[key] = ", ".join(values(value))
        elif key in one_value and len(values(value)) == 1:
            form[key] = values(value)[0]
        elif key in boxes and not isinstance(value, list):
            form[key] = NUMBER_FIELDS[key](value) if key in NUMBER_FIELDS else str(value)
        else:
            extra += [f"--{key}", *values(value)]
    form["extra"] = shlex.join(extra)
    return form


# -- Evaluate and Export --

def eval_argv(form: dict) -> list[str]:
    """`tunewise eval` flags: model A (a checkpoint, run directory or model), optionally --compare B, the report
    written to --output (the tab reads its table from there)."""
    a = str(form.get("a") or "").strip()
    if not a:
        raise UserError("Pick a checkpoint, run directory or model to evaluate (A).")
    a = checkpoint_of(a)
    argv = ["--adapters", a] if is_checkpoint(a) else ["--model", a]
    if b := str(form.get("b") or "").strip():
        argv += ["--compare", checkpoint_of(b)]
    for key in LIST_FIELDS:
        if values := _split(form.get(key)):
            argv += [f"--{key}", *values]
    for key in ("dataset", "preference_dataset"):
        if values := _split(form.get(key)):
            argv += [f"--{key}", ",".join(values)]
    if form.get("max_new_tokens") not in (None, ""):
        argv += ["--max_new_tokens", _flag_value("max_new_tokens", form["max_new_tokens"])]
    if form.get("retention_baseline") is False:
        argv += ["--retention_baseline", "false"]
    output = str(form.get("output") or "").strip()
    if not output:
        raise UserError("Give the report file (--output): the tab reads its table from it.")
    return argv + ["--output", output, "--overwrite", "true"]


def export_argv(form: dict) -> list[str]:
    """`tunewise export` flags: the LoRA checkpoint (or a run directory's best), an --output_dir when given."""
    ckpt = str(form.get("adapters") or "").strip()
    if not ckpt:
        raise UserError("Pick the LoRA checkpoint to export.")
    argv = ["--adapters", checkpoint_of(ckpt)]
    if out := str(form.get("output_dir") or "").strip():
        argv += ["--output_dir", out]
    if form.get("torch_dtype") and form["torch_dtype"] != "auto":
        argv += ["--torch_dtype", form["torch_dtype"]]
    if form.get("overwrite"):
        argv += ["--overwrite", "true"]
    return argv


def exported_path(log: str) -> str | None:
    """Where `tunewise export` wrote the merged model, read from its output."""
    found = re.findall(r"^merged model written to (.+)$", log, flags=re.M)
    return found[-1].strip() if found else None
