"""--reward_funcs, --reward_weights and --external_plugins to the reward callables and weights TRL's GRPOTrainer takes.

Every reward comes back wrapped (`BoundReward`): TRL logs it under its --reward_funcs name, an ms-swift-style plugin
is called the way ms-swift calls it, and a reward that raises or returns the wrong thing becomes a UserError naming
the function, its file and line, and the row. `check_rows` and `try_rewards` find the same problems before training
starts, so that a bad flag, column or plugin stops the run with nothing written.
"""
from __future__ import annotations

import asyncio
import difflib
import inspect
import math
import numbers
import traceback
from pathlib import Path

from tunewise.data.prompts import ORIGIN  # each row's file:line, for error messages
from tunewise.data.readers import show
from tunewise.errors import UserError, brief
from tunewise.rewards import plugins
from tunewise.rewards.builtin import BUILTIN, Reward, RewardArgs, soft_lengths, text_of

# Keywords TRL (and ms-swift) pass that are not dataset columns; a plugin parameter named so is not a column it needs.
PASSED = frozenset({"self", "prompts", "completions", "completion_ids", "response_token_ids", "trainer_state",
                    "log_extra", "log_metric", "environments", "messages", "args", "kwargs"})


def known_names() -> list[str]:
    return sorted({*BUILTIN, *plugins.REGISTRY})


class BoundReward:
    """One reward as TRL calls it: `f(prompts, completions, completion_ids=None, **columns) -> list[float | None]`."""

    def __init__(self, name: str, func, style: str = plugins.TRL, source: str = "built-in", needs=()):
        self.name, self.func, self.style, self.source, self.needs = name, func, style, source, tuple(needs)
        self.__name__ = name  # TRL's log name: rewards/<name>/mean

    def __repr__(self):
        return f"<reward {self.name} from {self.source}>"

    def _invoke(self, prompts, completions, completion_ids, kwargs):
        if self.style == plugins.SWIFT:  # ms-swift: completions as strings, first; token ids as response_token_ids
            kw = dict(kwargs)
            kw.setdefault("response_token_ids", completion_ids)
            if prompts and isinstance(prompts[0], list):
                kw.setdefault("messages", [p + [{"role": "assistant", "content": text_of(c)}]
                                           for p, c in zip(prompts, completions)])
            out = self.func([text_of(c) for c in completions], **kw)
        else:
            out = self.func(prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs)
        if inspect.isawaitable(out):
            out = asyncio.run(_awaited(out))
        return out

    def __call__(self, prompts=None, completions=(), completion_ids=None, **kwargs) -> list[float | None]:
        try:
            out = self._invoke(prompts, completions, completion_ids, kwargs)
        except UserError:
            raise
        except Exception as e:
            raise UserError(self._failure(e, prompts, completions, completion_ids, kwargs)) from e
        return self._checked(out, prompts, completions, kwargs)

    def _where(self, error: BaseException) -> str:
        """The source, with the line of the deepest frame in it when it is a file."""
        if not self.source.endswith(".py"):
            return self.source
        line = [f.lineno for f in traceback.extract_tb(error.__traceback__)
                if Path(f.filename).resolve() == Path(self.source).resolve()]
        return f"{self.source}:{line[-1]}" if line else self.source

    def _row(self, i: int, prompts, completions, kwargs) -> str:
        origins = kwargs.get(ORIGIN)
        where = origins[i] if isinstance(origins, list) and i < len(origins) else f"completion {i + 1} of the batch"
        prompt = prompts[i] if prompts is not None and i < len(prompts) else None
        prompt_text = text_of(prompt) if isinstance(prompt, list) else prompt
        return f"{where} (prompt {show(prompt_text)}, completion {show(text_of(completions[i]))})"

    def _failure(self, error, prompts, completions, completion_ids, kwargs) -> str:
        """The message for a reward that raised: which row makes it raise, found by calling it one row at a time."""
        n = len(completions)
        for i in range(n):
            one = {k: (v[i:i + 1] if isinstance(v, list) and len(v) == n else v) for k, v in kwargs.items()}
            try:
                self._invoke(prompts[i:i + 1] if prompts is not None else None, completions[i:i + 1],
                             completion_ids[i:i + 1] if completion_ids is not None else None, one)
            except Exception as e:
                return (f"reward function '{self.name}' ({self._where(e)}) raised {brief(e)} on row "
                        f"{self._row(i, prompts, completions, kwargs)}.")
        return (f"reward function '{self.name}' ({self._where(error)}) raised {brief(error)} on a batch of {n} "
                "completions.")

    def _checked(self, out, prompts, completions, kwargs) -> list[float | None]:
        n = len(completions)
        if not isinstance(out, (list, tuple)) or len(out) != n:
            got = f"{len(out)} values" if isinstance(out, (list, tuple)) else show(out, 40)
            raise UserError(f"reward function '{self.name}' ({self.source}) returned {got} for {n} completions; "
                            "it must return one number (or None) per completion.")
        values = []
        for i, value in enumerate(out):
            if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # a 0-d tensor or numpy scalar
                value = value.item()
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
                raise UserError(f"reward function '{self.name}' ({self.source}) returned {show(value, 40)} for row "
                                f"{self._row(i, prompts, completions, kwargs)}; a reward is a number or None.")
            if value is not None and math.isinf(value):
                raise UserError(f"reward function '{self.name}' ({self.source}) returned {value} for row "
                                f"{self._row(i, prompts, completions, kwargs)}; a reward must be finite.")
            values.append(None if value is None else float(value))
        return values


async def _awaited(awaitable):
    return await awaitable


def _build(name: str, entry: plugins.Entry, args: RewardArgs) -> BoundReward:
    obj = entry.obj
    if inspect.isclass(obj):
        try:
            takes_args = "args" in inspect.signature(obj).parameters
            obj = obj(args=args) if takes_args else obj()
        except UserError:
            raise
        except Exception as e:
            raise UserError(f"reward '{name}' ({entry.source}): building {entry.obj.__name__} raised {brief(e)}") \
                from e
    if not callable(obj):
        raise UserError(f"reward '{name}' ({entry.source}) is {show(repr(obj), 40)}, not a function or a class.")
    return BoundReward(name, obj, entry.style, entry.source, _needed_columns(obj, entry.style))


def _needed_columns(func, style: str) -> tuple[str, ...]:
    """The dataset columns a plugin's reward names as parameters without a default (ms-swift's `target, nums`)."""
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return ()
    if style == plugins.SWIFT and params:
        params = params[1:]  # ms-swift passes the completions first, whatever the parameter's name
    return tuple(p.name for p in params if p.default is inspect.Parameter.empty and p.name not in PASSED
                 and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def _unknown(name: str, loaded: dict[str, list[str]]) -> UserError:
    known = known_names()
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    registered = "".join(f" {file} registers {', '.join(names) if names else 'no reward'}." for file, names in
                         loaded.items())
    how = ("" if not loaded or any(loaded.values()) else
           " (A plugin registers a reward with `orms['NAME'] = Class`, as in ms-swift, or "
           "`@tunewise.rewards.register('NAME')`.)")
    return UserError(f"--reward_funcs {name}: no such reward. Known: {', '.join(known)}.{hint}{registered}{how}")


def _weights(weights, count: int, names) -> list[float]:
    if weights is None or len(weights) == 0:
        return [1.0] * count
    if len(weights) != count:
        raise UserError(f"--reward_weights has {len(weights)} value(s) for {count} reward(s) "
                        f"({' '.join(names)}); give one weight per reward, or none for 1.0 each.")
    out = []
    for w in weights:
        try:
            value = float(w)
        except (TypeError, ValueError):
            raise UserError(f"--reward_weights: {show(w, 30)} is not a number.") from None
        if not math.isfinite(value):
            raise UserError(f"--reward_weights: {w} is not a finite number.")
        out.append(value)
    return out


def row_origin(row: dict, index: int, dataset: str) -> str:
    return row.get(ORIGIN) or f"{dataset}, row {index + 1}"


def check_rows(rewards: list[BoundReward], rows, dataset: str = "--dataset") -> None:
    """Every column a reward needs is in every row (not missing, not null), or a UserError naming the first row
    without it."""
    for reward in rewards:
        for column in reward.needs:
            for i, row in enumerate(rows):
                if row.get(column) is None:
                    fields = ", ".join(k for k in row if k != ORIGIN)
                    raise UserError(f"{row_origin(row, i, dataset)}: --reward_funcs {reward.name} needs the field "
                                    f"'{column}' in every row of {dataset}, and this row has none (its fields: "
                                    f"{fields}).")


def reward_functions(names, weights=None, plugin_files=(), rows=None, dataset: str = "--dataset",
                     args: RewardArgs | None = None, models=()) -> tuple[list[BoundReward], list[float]]:
    """(rewards, weights) for GRPOTrainer(reward_funcs=...) and GRPOConfig(reward_weights=...): the plugin files
    imported first, each name looked up among the plugins' rewards and then the built-ins (a plugin may replace a
    built-in, as in ms-swift), the weights checked, and, when `rows` (the TRL rows, with their row_origin) are given,
    every column the rewards need checked in every row. `models`: the --reward_model names that follow the functions
    (the weights cover both, functions first)."""
    args = args or RewardArgs()
    names = list(names or [])
    if not names and not models:
        raise UserError("--reward_funcs: name at least one reward (built-in: " + ", ".join(BUILTIN) + ").")
    loaded = plugins.load_plugins(plugin_files or ())
    rewards = []
    for name in names:
        if name in plugins.REGISTRY:
            rewards.append(_build(name, plugins.REGISTRY[name], args))
        elif name in BUILTIN:
            reward: Reward = BUILTIN[name](args)
            if name == "soft_overlong":
                soft_lengths(args)
            rewards.append(BoundReward(name, reward, plugins.TRL, "built-in", reward.needs))
        else:
            raise _unknown(name, loaded)
    out_weights = _weights(weights, len(rewards) + len(models), [*names, *models])
    if rows is not None:
        check_rows(rewards, rows, dataset)
    return rewards, out_weights


def try_rewards(rewards: list[BoundReward], rows: list[dict], tokenizer=None, count: int = 2) -> None:
    """Call every reward once on the first `count` rows, each answered with its own solution (or nothing), so that a
    plugin that raises or returns the wrong thing stops the run before anything is written."""
    rows = list(rows[:count])
    if not rows:
        return
    prompts = [r.get("prompt") for r in rows]
    texts = [str(r.get("solution") or "") for r in rows]
    completions = [[{"role": "assistant", "content": t}] if isinstance(p, list) else t for p, t in zip(prompts, texts)]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] if tokenizer is not None else [0] * len(t.split())
           for t in texts]
    columns = {k: [r.get(k) for r in rows] for k in rows[0] if k != "prompt"}
    for reward in rewards:
        reward(prompts=prompts, completions=completions, completion_ids=ids, trainer_state=None, **columns)
