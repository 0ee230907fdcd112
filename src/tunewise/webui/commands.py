"""The command lines the web UI's forms run: `tunewise sft` / `tunewise dpo` from the Train form, `tunewise eval`
from Evaluate, `tunewise export` from Export; the exact line each would run (the live preview), and the Train form
saved as / loaded from the YAML that `tunewise sft|dpo --config FILE` reads.

Everything here is pure (no Gradio): a form is a dict of field name -> value, as the tabs hand them over.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

from tunewise.errors import UserError
from tunewise.models.checkpoint import checkpoint_of, is_checkpoint

# the Train form's fields, in the order the Train tab hands their values over
TRAIN_FIELDS = ["stage", "model", "train_type", "dataset", "pref_dataset", "model_name", "model_author", "system",
                "num_train_epochs", "max_steps", "learning_rate", "lr_scheduler_type", "warmup_ratio", "lora_rank",
                "lora_alpha", "per_device_train_batch_size", "gradient_accumulation_steps", "max_length",
                "logging_steps", "save_steps", "output_dir", "report_to", "beta", "loss_type", "rpo_alpha",
                "adapters", "extra"]
STAGES = ("sft", "dpo")
# form fields that are flags of the same name with one value, in the order they are written
SCALAR_FLAGS = ("num_train_epochs", "max_steps", "learning_rate", "lr_scheduler_type", "warmup_ratio", "lora_rank",
                "lora_alpha", "per_device_train_batch_size", "gradient_accumulation_steps", "max_length",
                "logging_steps", "save_steps", "system", "output_dir")
DPO_FLAGS = ("beta", "rpo_alpha")
LIST_FIELDS = ("model_name", "model_author")  # "Chinese, English" in one textbox
FLOAT_FLAGS = ("num_train_epochs", "learning_rate", "warmup_ratio", "beta", "rpo_alpha")  # written as given
NUMBER_FIELDS = {"num_train_epochs": float, "max_steps": int, "lora_rank": int, "lora_alpha": int,
                 "max_length": int, "logging_steps": int, "save_steps": int, "beta": float}  # gr.Number fields


def command_line(command: str, argv: list[str]) -> str:
    """What the user would type: `tunewise COMMAND ARGV...`, quoted for a POSIX shell."""
    return shlex.join(["tunewise", command, *argv])


def _split(text) -> list[str]:
    return [part.strip() for part in str(text or "").split(",") if part.strip()]


def _flag_value(key: str, value) -> str:
    if isinstance(value, float) and value.is_integer() and key not in FLOAT_FLAGS:
        value = int(value)  # a gr.Number hands over 5.0 for 5
    return str(value)


def train_command(form: dict, uploads: list[str] = ()) -> tuple[str, list[str]]:
    """(command, flags) of the Train form: `sft`, or `dpo` with its preference data and DPO flags. Empty fields are
    left to the command's defaults; uploaded files are added to the dataset list."""
    stage = form.get("stage") or "sft"
    if stage not in STAGES:
        raise UserError(f"stage {stage!r}: expected sft or dpo.")
    argv = ["--model", form.get("model") or "tunewise-tiny", "--train_type", form.get("train_type") or "lora"]
    datasets = _split(form.get("pref_dataset" if stage == "dpo" else "dataset")) + [str(u) for u in uploads]
    if not datasets:
        kind = "preference pairs (e.g. concise)" if stage == "dpo" else "e.g. self_cognition#80"
        raise UserError(f"Give a dataset: upload a .jsonl/.json file or name one ({kind}).")
    argv += ["--dataset", *datasets]
    for key in LIST_FIELDS:
        if values := _split(form.get(key)):
            argv += [f"--{key}", *values]
    for key in SCALAR_FLAGS + (DPO_FLAGS if stage == "dpo" else ()):
        value = form.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        argv += [f"--{key}", _flag_value(key, value.strip() if isinstance(value, str) else value)]
    if stage == "dpo":
        if form.get("loss_type"):
            argv += ["--loss_type", form["loss_type"]]
        if adapters := str(form.get("adapters") or "").strip():
            argv += ["--adapters", adapters]
    if form.get("report_to"):
        argv += ["--report_to", form["report_to"]]
    if extra := str(form.get("extra") or "").strip():
        try:
            argv += shlex.split(extra)
        except ValueError as e:
            raise UserError(f"other flags: {e} in {extra!r}.") from None
    return stage, argv


def sft_argv(form: dict, uploads: list[str] = ()) -> list[str]:
    """`tunewise sft` flags of the Train form (its stage set to sft)."""
    return train_command({**form, "stage": "sft"}, uploads)[1]


def args_class(command: str):
    from tunewise.args import DpoArgs, SftArgs

    return {"sft": SftArgs, "dpo": DpoArgs}[command]


# -- YAML: the format `--config FILE` reads (tunewise.flags): a mapping of flag names to values --

HEADER = "# tunewise web UI, Train form; run the same with:\n#   tunewise {command} --config {path}\n"


def train_yaml(form: dict, uploads: list[str] = (), path: str = "FILE.yaml") -> str:
    """The Train form as YAML for `tunewise sft|dpo --config`: the flags the form passes, checked and typed as the
    command reads them (a problem, such as an unknown flag in 'other flags', is a UserError)."""
    import yaml

    from tunewise.flags import parse

    command, argv = train_command(form, uploads)
    args, sources, _ = parse(args_class(command), argv)
    data = {name: getattr(args, name) for name, source in sources.items() if source == "flag"}
    body = yaml.safe_dump(data, allow_unicode=True, sort_keys=False, default_flow_style=False)
    return HEADER.format(command=command, path=shlex.quote(str(path))) + body


DPO_ONLY = ("beta", "loss_type", "loss_weights", "rpo_alpha", "label_smoothing", "ref_model", "adapters")
ONE_VALUE_FIELDS = {"sft": ("model", "train_type", "report_to"),
                    "dpo": ("model", "train_type", "report_to", "loss_type", "adapters")}


def form_from_yaml(path: str) -> dict:
    """The Train form filled from a YAML config (the one train_yaml writes, or any `--config` file), checked as
    `tunewise sft|dpo --config PATH` checks it: known fields go to their boxes, every other key to 'other flags'.
    The stage is the one the file's header names, else dpo when it holds a DPO-only key."""
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
    named = re.search(r"^#.*\btunewise (sft|dpo) --config", text, flags=re.M)
    stage = named.group(1) if named else "dpo" if any(k in data for k in DPO_ONLY) else "sft"
    parse(args_class(stage), ["--config", str(path)])  # unknown keys, types, values: a UserError naming the file

    def values(v) -> list[str]:
        return [str(x).lower() if isinstance(x, bool) else str(x) for x in (v if isinstance(v, list) else [v])]

    form = {key: "" for key in TRAIN_FIELDS}
    form.update(stage=stage, report_to="tensorboard", loss_type="sigmoid")  # the boxes' values the command defaults to
    extra = []
    for key, value in data.items():
        if key == "dataset":
            form["pref_dataset" if stage == "dpo" else "dataset"] = ", ".join(values(value))
        elif key in LIST_FIELDS:
            form[key] = ", ".join(values(value))
        elif key in ONE_VALUE_FIELDS[stage] and len(values(value)) == 1:
            form[key] = values(value)[0]
        elif key in SCALAR_FLAGS + (DPO_FLAGS if stage == "dpo" else ()) and not isinstance(value, list):
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
