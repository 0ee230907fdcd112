"""Command-line arguments: one dataclass per command, ms-swift flag names, YAML + flags, every value's source.

`parse(SftArgs, argv)` reads `--config run.yaml` first, then the flags (which win), checks every value and reports
all problems at once as a UserError. Each resolved value keeps where it came from ("default", "model" for a
built-in model's recommended value, "yaml", "flag"); `args.json` in the run directory records both.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path

from tunewise.errors import UserError

TRAIN_TYPES = ("lora", "full")
TRUNCATION = ("delete", "left", "right")
GUARD_MODES = ("error", "warn", "off")
DS_SCHEDULER_MODES = ("flags", "keep")
EARLY_STOP_ON = ("eval_loss", "retention")
DEFAULT_LEARNING_RATE = {"lora": 1e-4, "full": 1e-5}
TORCH_DTYPES = ("auto", "float32", "bfloat16", "float16")
ATTN_IMPLS = ("sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention")
REPORT_TO = ("tensorboard", "none")


def not_one_of(args, choices: dict[str, tuple]) -> list[str]:
    """The "--flag value: expected one of a, b." problems of the named flags of `args` (a None value is not checked)."""
    values = {name: getattr(args, name) for name in choices}
    return [f"--{name} {values[name]}: expected one of {', '.join(allowed)}."
            for name, allowed in choices.items() if values[name] is not None and values[name] not in allowed]


def below_minimum(args, names, low: int = 1) -> list[str]:
    """The "--flag value: must be at least `low`." problems of the named numeric flags of `args`."""
    return [f"--{name} {getattr(args, name)}: must be at least {low}." for name in names if getattr(args, name) < low]


def _f(default, help: str, **kw):
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class ModelArgs:
    model: str = _f("tunewise-tiny", "base model: a local HF directory, a hub id, or the built-in tunewise-tiny")
    torch_dtype: str = _f("auto", "auto | float32 | bfloat16 | float16")
    attn_impl: str | None = _f(None, "attention implementation: sdpa | eager | flash_attention_2")
    system: str | None = _f(None, "system prompt for rows (and chats) that have none")

    def model_problems(self) -> list[str]:
        """The problems of the model flags, found before anything is loaded or written."""
        return not_one_of(self, {"torch_dtype": TORCH_DTYPES, "attn_impl": ATTN_IMPLS})

    def __post_init__(self):
        if problems := self.model_problems():
            raise UserError(" ".join(problems))


@dataclass
class SftArgs(ModelArgs):
    """Supervised fine-tuning (`tunewise sft`); `tunewise plan` takes the same flags."""

    train_type: str = _f("lora", "lora | full", aliases=("tuner_type",))
    dataset: list[str] = _f([], "files (.jsonl/.json), PATH#N to sample N rows, or built-in sets (self_cognition)", split_commas=True)
    val_dataset: list[str] = _f([], "validation data, same forms as --dataset", split_commas=True)
    split_dataset_ratio: float = _f(0.0, "fraction of --dataset held out for validation when --val_dataset is not given")
    model_name: list[str] = _f([], "new model name for {{NAME}}: one value, or Chinese then English")
    model_author: list[str] = _f([], "new author for {{AUTHOR}}: one value, or Chinese then English")
    num_train_epochs: float = _f(3.0, "training epochs")
    max_steps: int = _f(-1, "optimizer steps; overrides --num_train_epochs when > 0")
    learning_rate: float | None = _f(None, "peak learning rate (default: lora 1e-4, full 1e-5, as ms-swift; the built-in "
                                           "model recommends its own)")
    lr_scheduler_type: str = _f("cosine", "linear | cosine | cosine_with_min_lr | constant | constant_with_warmup | warmup_stable_decay")
    lr_scheduler_kwargs: str | None = _f(None, 'JSON object of scheduler options, e.g. {"min_lr_rate": 0.1}')
    warmup_ratio: float | None = _f(None, "warm-up as a fraction of the optimizer steps (default 0.05)")
    warmup_steps: int | None = _f(None, "warm-up in optimizer steps; give this or --warmup_ratio")
    per_device_train_batch_size: int = _f(1, "samples per device per forward pass")
    per_device_eval_batch_size: int = _f(1, "samples per device per evaluation pass")
    gradient_accumulation_steps: int = _f(16, "forward passes per optimizer step")
    weight_decay: float = _f(0.1, "AdamW weight decay")
    max_grad_norm: float = _f(1.0, "gradient clipping norm")
    lora_rank: int = _f(8, "LoRA rank r")
    lora_alpha: int = _f(32, "LoRA alpha")
    lora_dropout: float = _f(0.05, "LoRA dropout")
    target_modules: list[str] = _f(["all-linear"], "modules that get LoRA: all-linear or names (q_proj,v_proj,...)", split_commas=True)
    max_length: int = _f(2048, "longest tokenized conversation")
    truncation_strategy: str = _f("delete", "a row longer than --max_length is: delete | left | right (truncated)")
    gradient_checkpointing: bool = _f(False, "recompute activations in the backward pass to save memory")
    deepspeed: str | None = _f(None, "DeepSpeed ZeRO: zero2 | zero3 | zero3_offload (built in) or a DeepSpeed JSON file")
    deepspeed_scheduler: str = _f("flags", "a 'scheduler' block in the DeepSpeed JSON: flags (removed with a warning; "
                                           "the flags decide) | keep (the JSON's scheduler is used and planned)")
    eval_steps: int = _f(50, "evaluate every N optimizer steps (when there is validation data)")
    save_steps: int = _f(50, "save a checkpoint every N optimizer steps")
    save_total_limit: int | None = _f(2, "checkpoints kept; the best (lowest eval loss) and the last are always kept")
    logging_steps: int = _f(5, "log every N optimizer steps")
    early_stop_patience: int | None = _f(None, "stop after K evaluations without a lower eval loss (with --early_stop_on "
                                               "retention: after K probes in a row past the threshold, default 2)")
    retention_eval_steps: int = _f(0, "every N optimizer steps (and before the first) score general-skill and identity "
                                      "probes, log them and plot them with the loss (0: off)")
    retention_dataset: list[str] = _f([], "general-skill probes for the retention watch: {query, response} rows, right "
                                          "when the reply contains the response (default for the built-in model: 50 "
                                          "of its held-out additions)", split_commas=True)
    retention_threshold: float = _f(0.05, "warn (or stop, see --early_stop_on) when the general-skill probes fall "
                                          "more than this below their score at the start")
    retention_max_new_tokens: int = _f(64, "longest reply to a --retention_dataset probe")
    early_stop_on: str = _f("eval_loss", "eval_loss (with --early_stop_patience) | retention: stop when the "
                                         "retention watch sees the general skill stay past --retention_threshold "
                                         "for --early_stop_patience probes (default 2), keeping as best the "
                                         "checkpoint with the highest identity + retention")
    output_dir: str = _f("output", "runs are written to OUTPUT_DIR/vN-YYYYMMDD-HHMMSS")
    add_version: bool = _f(True, "create a versioned sub-directory vN-... under --output_dir")
    resume_from_checkpoint: str | None = _f(None, "a checkpoint directory, or 'latest' (the newest in --output_dir)")
    seed: int = _f(42, "random seed")
    dataloader_num_workers: int = _f(0, "data loader worker processes")
    report_to: list[str] = _f(["tensorboard"], "tensorboard | none", split_commas=True)
    nproc_per_node: int = _f(1, "processes on this machine (data parallel; launched with torchrun)")
    nnodes: int = _f(1, "machines taking part (torchrun --nnodes)")
    node_rank: int = _f(0, "this machine's rank among --nnodes (torchrun --node_rank)")
    master_addr: str = _f("127.0.0.1", "address of the rank-0 machine (torchrun --master_addr)")
    master_port: int = _f(29500, "port of the rank-0 machine (torchrun --master_port)")
    gpu_memory: str | None = _f(None, "GPU memory per device for the plan's memory estimate, e.g. 24GiB or 80GB (default: the visible GPU's)")
    local_rank: int = _f(-1, "set by the deepspeed launcher (torchrun uses the LOCAL_RANK variable); not for users")
    schedule_guard: str = _f("error", "when the optimizer's LR leaves the plan: error (stop) | warn | off")

    def __post_init__(self):
        problems = self.model_problems()
        unknown = [r for r in self.report_to if r not in REPORT_TO]
        if unknown:
            problems.append(f"--report_to {','.join(unknown)}: expected {' or '.join(REPORT_TO)} (logging.jsonl and "
                            "the plots are always written).")
        if self.learning_rate is None:  # every weight moves in full fine-tuning: ten times below LoRA
            self.learning_rate = DEFAULT_LEARNING_RATE.get(self.train_type, DEFAULT_LEARNING_RATE["lora"])
        problems += not_one_of(self, {"train_type": TRAIN_TYPES, "truncation_strategy": TRUNCATION,
                                      "schedule_guard": GUARD_MODES, "deepspeed_scheduler": DS_SCHEDULER_MODES,
                                      "early_stop_on": EARLY_STOP_ON})
        if self.warmup_ratio is not None and self.warmup_steps is not None:
            problems.append("--warmup_ratio and --warmup_steps are both set; give one.")
        if self.warmup_ratio is not None and not 0 <= self.warmup_ratio < 1:
            problems.append(f"--warmup_ratio {self.warmup_ratio}: must be in [0, 1).")
        if not 0 <= self.split_dataset_ratio < 1:
            problems.append(f"--split_dataset_ratio {self.split_dataset_ratio}: must be in [0, 1).")
        problems += below_minimum(self, ("nproc_per_node", "nnodes", "per_device_train_batch_size",
                                         "per_device_eval_batch_size", "gradient_accumulation_steps", "lora_rank",
                                         "lora_alpha", "max_length", "eval_steps", "save_steps", "logging_steps",
                                         "retention_max_new_tokens"))
        if self.learning_rate <= 0:
            problems.append(f"--learning_rate {self.learning_rate}: must be positive.")
        if self.num_train_epochs <= 0 and self.max_steps <= 0:
            problems.append("--num_train_epochs must be positive (or give --max_steps).")
        for flag in ("model_name", "model_author"):
            if len(getattr(self, flag)) > 2:
                problems.append(f"--{flag} takes one or two values (Chinese, English), got {len(getattr(self, flag))}.")
        if self.lr_scheduler_kwargs:
            try:
                if not isinstance(json.loads(self.lr_scheduler_kwargs), dict):
                    raise ValueError
            except ValueError:
                problems.append(f"--lr_scheduler_kwargs {self.lr_scheduler_kwargs}: expected a JSON object.")
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
        if problems:
            raise UserError(" ".join(problems))

    def scheduler_kwargs(self) -> dict:
        return json.loads(self.lr_scheduler_kwargs) if self.lr_scheduler_kwargs else {}

    def recipe(self) -> str:
        """The key of a built-in model's recommended values for this kind of run (tunewise.json "recommended")."""
        return self.train_type


@dataclass
class GenerationArgs:
    temperature: float = _f(0.0, "0 = greedy")
    top_p: float = _f(1.0, "nucleus sampling")
    top_k: int = _f(50, "top-k sampling")
    repetition_penalty: float = _f(1.0, "> 1 discourages repetition")
    max_new_tokens: int = _f(512, "longest reply")
    seed: int | None = _f(None, "sampling seed")


@dataclass
class InferArgs(ModelArgs, GenerationArgs):
    """Chat with a base model or a fine-tuned checkpoint (`tunewise infer`)."""

    model: str | None = _f(None, "base model; read from the run's args.json when --adapters is given")
    adapters: list[str] = _f([], "a LoRA checkpoint (peft) or a full checkpoint directory")
    query: str | None = _f(None, "answer this one question and exit; without it an interactive chat starts")
    stream: bool = _f(True, "print tokens as they are generated")


@dataclass
class ExportArgs:
    """Write a checkpoint as a plain Hugging Face model directory (`tunewise export`)."""

    adapters: list[str] = _f([], "the LoRA checkpoint to export")
    model: str | None = _f(None, "base model; read from the run's args.json when omitted")
    merge_lora: bool = _f(True, "merge the LoRA weights into the base model")
    output_dir: str | None = _f(None, "default: CHECKPOINT-merged next to the checkpoint")
    torch_dtype: str = _f("auto", "dtype of the written weights")

    def __post_init__(self):
        if problems := not_one_of(self, {"torch_dtype": TORCH_DTYPES}):
            raise UserError(" ".join(problems))


# ---------------------------------------------------------------------------------------------------------------
_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}


def field_kind(tp) -> tuple[type, bool, bool]:
    """(scalar type, is_list, optional) of a dataclass field annotation."""
    optional = False
    origin = typing.get_origin(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional, tp, origin = True, args[0], typing.get_origin(args[0])
    if origin is list:
        return typing.get_args(tp)[0], True, optional
    return tp, False, optional


def convert_value(name: str, raw, scalar: type, optional: bool):
    if raw is None or (optional and isinstance(raw, str) and raw.lower() in ("none", "null")):
        if optional:
            return None
        raise ValueError("a value is required")
    if scalar is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise ValueError(f"expected true or false, got {raw!r}")
    if scalar is int:
        if isinstance(raw, float) and raw.is_integer():
            return int(raw)
        if isinstance(raw, bool):
            raise ValueError(f"expected an integer, got {raw!r}")
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"expected an integer, got {raw!r}") from None
    if scalar is float:
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"expected a number, got {raw!r}") from None
    return str(raw)


def flag_table(cls) -> dict[str, dataclasses.Field]:
    """flag name (and alias) -> field."""
    table = {}
    for f in dataclasses.fields(cls):
        table[f.name] = f
        for alias in f.metadata.get("aliases", ()):
            table[alias] = f
    return table


def flag_groups(argv: list[str]) -> list[tuple[str | None, list[str]]]:
    """`--flag v1 v2 --other=v` -> [("flag", ["v1", "v2"]), ("other", ["v"])], in order, "-" in names read as "_".
    A token before any flag is (None, [token]); "--5" or "--1e-3" is a value, not a flag."""
    groups: list[tuple[str | None, list[str]]] = []
    for token in argv:
        if token.startswith("--") and len(token) > 2 and not token[2].isdigit():
            name, eq, value = token[2:].partition("=")
            groups.append((name.replace("-", "_"), [value] if eq else []))
        elif groups and groups[-1][0] is not None:
            groups[-1][1].append(token)
        else:
            groups.append((None, [token]))
    return groups


def _split_argv(argv: list[str], table: dict, problems: list[str]) -> dict[str, list[str]]:
    """--flag v1 v2 --other=v  ->  {"flag": ["v1", "v2"], "other": ["v"]}; unknown flags become problems (their
    values are not reported again), as do values before the first flag."""
    given: dict[str, list[str]] = {}
    for name, values in flag_groups(argv):
        if name is None:
            problems.append(f"Unexpected value {values[0]!r}: values follow a --flag.")
        elif name not in table:
            close = difflib.get_close_matches(name, table, n=3, cutoff=0.6)
            hint = f" Did you mean {', '.join('--' + c for c in close)}?" if close else ""
            problems.append(f"Unknown flag --{name}.{hint}")
        else:
            entry = table[name]
            given[entry if isinstance(entry, str) else entry.name] = values  # str: a flag outside the dataclass
    return given


def _read_yaml(path: str, table: dict, problems: list[str]) -> dict:
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        problems.append(f"--config {path}: cannot read it ({e.strerror}).")
        return {}
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        problems.append(f"{path}{where}: not valid YAML ({getattr(e, 'problem', e)}).")
        return {}
    if not isinstance(data, dict):
        problems.append(f"{path}: expected a mapping of flag names to values.")
        return {}
    out = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in table:
            close = difflib.get_close_matches(name, table, n=3, cutoff=0.6)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            problems.append(f"{path}: unknown key '{key}'.{hint}")
            continue
        out[table[name].name] = value
    return out


def parse(cls, argv: list[str], extra_flags: dict | None = None):
    """Parse `argv` into `cls`. Returns (args, sources, extra) where `extra` holds values of `extra_flags`
    (flags a command accepts besides its dataclass, name -> default)."""
    extra_flags = dict(extra_flags or {})
    table = flag_table(cls)
    for name in list(extra_flags) + ["config"]:
        table[name] = name
    problems: list[str] = []
    given = _split_argv(argv, table, problems)
    config_values = {}
    if "config" in given:
        if len(given["config"]) != 1:
            problems.append("--config takes one YAML file.")
        else:
            config_values = _read_yaml(given["config"][0], flag_table(cls), problems)
    extra = {k: (given[k] if k in given else v) for k, v in extra_flags.items()}

    values, sources = {}, {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        scalar, is_list, optional = field_kind(hints[f.name])
        source = "flag" if f.name in given else "yaml" if f.name in config_values else None
        if source is None:
            continue
        raw = given[f.name] if source == "flag" else config_values[f.name]
        try:
            if is_list:
                items = raw if isinstance(raw, list) else [raw]
                if f.metadata.get("split_commas"):
                    items = [part.strip() for item in items for part in str(item).split(",") if part.strip()]
                values[f.name] = [convert_value(f.name, item, scalar, False) for item in items]
            else:
                if source == "flag":
                    if len(raw) > 1:
                        raise ValueError(f"takes one value, got {len(raw)}: {' '.join(raw)}")
                    raw = raw[0] if raw else (True if scalar is bool else None)
                values[f.name] = convert_value(f.name, raw, scalar, optional)
            sources[f.name] = source
        except ValueError as e:
            where = "--" + f.name if source == "flag" else f"{given['config'][0]}: {f.name}"
            problems.append(f"{where}: {e}.")
    if problems:
        raise UserError(" ".join(problems))
    args = cls(**values)
    for f in dataclasses.fields(cls):
        sources.setdefault(f.name, "default")
    return args, sources, extra


def apply_recommended(args, sources: dict, recommended: dict) -> list[str]:
    """Set values the user left at their defaults to a model's recommended ones; returns the names changed."""
    changed = []
    for name, value in recommended.items():
        if name == "warmup_ratio" and sources.get("warmup_steps") != "default":
            continue
        if hasattr(args, name) and sources.get(name) == "default":
            setattr(args, name, value)
            sources[name] = "model"
            changed.append(name)
    return changed


def help_text(cls, command: str) -> str:
    lines = [f"usage: tunewise {command} [--flag value ...] [--config run.yaml]", "", (cls.__doc__ or "").strip(), ""]
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        aliases = "".join(f" (--{a})" for a in f.metadata.get("aliases", ()))
        lines.append(f"  --{f.name}{aliases}  {f.metadata.get('help', '')} [default: {default}]")
    return "\n".join(lines)


def to_json(args, sources: dict, command: str) -> dict:
    from tunewise import __version__

    return {"command": command, "tunewise_version": __version__, "args": dataclasses.asdict(args), "sources": sources}
