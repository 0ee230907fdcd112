"""Reading flags into an argument dataclass: `--flag v1 v2` and `--flag=v`, `--config run.yaml` (the flags win),
type conversion, every problem reported at once, and where each value came from.

`parse(SftArgs, argv)` returns (args, sources, extra). A value's source is "default", "yaml", "flag" or, for a field
declared with `env=NAME` (ms-swift's launch variables, e.g. NPROC_PER_NODE), "env NAME" here: a flag or YAML value
that disagrees with the variable is an error, not a silent choice. The run's resolution adds "model" (a built-in
model's recommended value) and "adapters" (read from a checkpoint's run); `args.json` in the run directory records
both. The argument classes themselves are in tunewise.args.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from dataclasses import field
from pathlib import Path

from tunewise.errors import raise_problems


def not_one_of(args, choices: dict[str, tuple]) -> list[str]:
    """The "--flag value: expected one of a, b." problems of the named flags of `args` (a None value is not checked)."""
    values = {name: getattr(args, name) for name in choices}
    return [f"--{name} {values[name]}: expected one of {', '.join(allowed)}."
            for name, allowed in choices.items() if values[name] is not None and values[name] not in allowed]


def below_minimum(args, names, low: int = 1) -> list[str]:
    """The "--flag value: must be at least `low`." problems of the named numeric flags of `args`."""
    return [f"--{name} {getattr(args, name)}: must be at least {low}." for name in names if getattr(args, name) < low]


def flag_field(default, help: str, **kw):
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


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


def _env_problem(name: str, env_name: str, scalar: type, source: str | None, given: dict, config_values: dict):
    """A flag or YAML value for `name` that disagrees with its environment variable (ms-swift's way of saying it)."""
    if source is None:
        return None
    raw = given[name][0] if source == "flag" and given[name] else config_values.get(name) if source == "yaml" else None
    try:
        same = convert_value(name, raw, scalar, False) == convert_value(name, os.environ[env_name].strip(), scalar, False)
    except ValueError:
        return None  # the bad value is reported by the parse itself
    if same:
        return None
    where = f"--{name} {raw}" if source == "flag" else f"{given['config'][0]}: {name}: {raw}"
    return (f"{where} and the environment's {env_name}={os.environ[env_name].strip()} disagree: give one of them "
            f"(unset {env_name}, or drop --{name}).")


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
        env_name = f.metadata.get("env")
        if env_name and os.environ.get(env_name, "").strip():
            problem = _env_problem(f.name, env_name, scalar, source, given, config_values)
            if problem:
                problems.append(problem)
                continue
            if source is None:
                source, raw = f"env {env_name}", os.environ[env_name].strip()
        if source is None:
            continue
        if source == "flag":
            raw = given[f.name]
        elif source == "yaml":
            raw = config_values[f.name]
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
                    # a bare flag: true for a bool, the field's "const" where it has one (--fsdp), else no value
                    raw = raw[0] if raw else (True if scalar is bool else f.metadata.get("const"))
                values[f.name] = convert_value(f.name, raw, scalar, optional)
            sources[f.name] = source
        except ValueError as e:
            where = ("--" + f.name if source == "flag" else f"{given['config'][0]}: {f.name}" if source == "yaml"
                     else f"{env_name} (the environment variable read as --{f.name})")
            problems.append(f"{where}: {e}.")
    raise_problems(problems)
    args = cls(**values)
    for f in dataclasses.fields(cls):
        sources.setdefault(f.name, "default")
    return args, sources, extra


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
