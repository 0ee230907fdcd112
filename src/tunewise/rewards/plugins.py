"""User rewards from `--external_plugins FILE.py`, registered by name in either of two ways:

    from tunewise.rewards import register          # tunewise's own: TRL's reward signature
    @register("exact_sum")                         # (or bare @register: the function's name)
    def exact_sum(prompts, completions, completion_ids=None, solution=None, **kwargs) -> list[float]: ...

    from swift.rewards import ORM, orms            # ms-swift's (3.x: `from swift.plugin import ORM, orms`)
    class MyReward(ORM):
        def __call__(self, completions, solution, **kwargs) -> list[float]: ...
    orms["my_reward"] = MyReward

ms-swift's form works without ms-swift installed: while a plugin file is imported, `swift`, `swift.rewards` and
`swift.plugin` are stand-ins holding ORM, AsyncORM and `orms` (nothing else of ms-swift). An ms-swift reward is
built with `args=` the reward settings (builtin.RewardArgs, ms-swift's attribute names) and called as ms-swift calls
it: the completions as strings, first and positional; the dataset columns, `response_token_ids` and `trainer_state`
as keywords. A plugin that cannot be imported is a UserError naming the file and line.
"""
from __future__ import annotations

import importlib.util
import sys
import traceback
import types
from dataclasses import dataclass
from pathlib import Path

from tunewise.errors import UserError, brief

TRL, SWIFT = "trl", "swift"


@dataclass
class Entry:
    """A registered reward: the function or class, where it came from, and how it is called (TRL or ms-swift)."""
    obj: object
    source: str
    style: str = TRL


REGISTRY: dict[str, Entry] = {}
_loading: list[str] = []  # the plugin file being imported, for the entries it registers


def _source() -> str:
    return _loading[-1] if _loading else "register()"


def register(name=None, func=None):
    """Register a reward under `name`: `@register`, `@register("name")` or `register("name", func)`. A function is
    called with TRL's reward signature; a class is built once (with `args=` the reward settings when its __init__
    takes `args`) and its instances called the same way."""
    if callable(name) and func is None:  # bare @register
        return register(getattr(name, "__name__", None), name)

    def add(f):
        key = name or getattr(f, "__name__", None)
        if not isinstance(key, str) or not key:
            raise UserError(f"{_source()}: register() needs a name for {f!r}.")
        REGISTRY[key] = Entry(f, _source(), TRL)
        return f

    return add if func is None else add(func)


class _SwiftOrms(dict):
    """ms-swift's `orms` registry dict: assigning to it registers an ms-swift-style reward."""

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        REGISTRY[key] = Entry(value, _source(), SWIFT)


class ORM:
    """ms-swift's base class of synchronous outcome rewards (its API: __init__(args), __call__(completions, **kw))."""

    def __init__(self, args=None, **kwargs):
        self.args = args

    def __call__(self, completions, **kwargs) -> list[float]:
        raise NotImplementedError


class AsyncORM(ORM):
    """ms-swift's base class of asynchronous outcome rewards."""

    async def __call__(self, completions, **kwargs) -> list[float]:
        raise NotImplementedError


def _swift_stand_ins() -> dict[str, types.ModuleType]:
    orms = _SwiftOrms()
    mods = {}
    for name in ("swift", "swift.rewards", "swift.plugin"):
        mod = types.ModuleType(name)
        mod.__path__ = []  # a package: `import swift.other` then fails as ModuleNotFoundError('swift.other')
        mod.ORM, mod.AsyncORM, mod.orms = ORM, AsyncORM, orms
        mods[name] = mod
    mods["swift"].rewards, mods["swift"].plugin = mods["swift.rewards"], mods["swift.plugin"]
    return mods


def _line_in(error: BaseException, path: Path) -> str:
    """"file:line" of the deepest frame of `error` inside the plugin file (or the file alone)."""
    where = str(path)
    for frame in traceback.extract_tb(error.__traceback__):
        if Path(frame.filename).resolve() == path:
            where = f"{path}:{frame.lineno}"
    return where


def load_plugin(file: str) -> list[str]:
    """Import one plugin file; returns the reward names it registered (in order). UserError for a missing file, a
    syntax error, or an exception while importing, naming the file and line."""
    path = Path(file).expanduser()
    if not path.exists():
        raise UserError(f"--external_plugins {file}: no such file.")
    if path.is_dir():
        raise UserError(f"--external_plugins {file}: is a directory; name the plugin's .py file.")
    path = path.resolve()
    before = dict(REGISTRY)
    stand_ins = {} if importlib.util.find_spec("swift") is not None else _swift_stand_ins()
    saved = {k: sys.modules.get(k) for k in stand_ins}
    module_name = f"tunewise_plugin_{abs(hash(str(path)))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.update(stand_ins)
    sys.modules[module_name] = module  # classes and functions in it are then picklable
    if str(path.parent) not in sys.path:
        sys.path.append(str(path.parent))  # a plugin may import its neighbours, as with ms-swift
    _loading.append(str(path))
    try:
        try:
            spec.loader.exec_module(module)
        except BaseException:  # a plugin that fails registers nothing
            sys.modules.pop(module_name, None)
            REGISTRY.clear()
            REGISTRY.update(before)
            raise
    except UserError:
        raise
    except SyntaxError as e:
        raise UserError(f"--external_plugins {path}:{e.lineno}: syntax error: {e.msg}.") from None
    except ModuleNotFoundError as e:
        hint = ""
        if stand_ins and (e.name or "").startswith("swift."):
            hint = (" ms-swift is not installed, and tunewise stands in only for swift.rewards and swift.plugin "
                    "(ORM, AsyncORM, orms); import nothing else from swift in a plugin.")
        raise UserError(f"--external_plugins {_line_in(e, path)}: imports {e.name}, which is not installed.{hint}") \
            from None
    except Exception as e:
        raise UserError(f"--external_plugins {_line_in(e, path)}: importing the plugin raised {brief(e)}") from None
    finally:
        _loading.pop()
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return [k for k, v in REGISTRY.items() if before.get(k) is not v]


def load_plugins(files) -> dict[str, list[str]]:
    """{file: names it registered} for every plugin file, imported in order."""
    return {str(f): load_plugin(str(f)) for f in files}
