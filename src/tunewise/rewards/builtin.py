"""The built-in GRPO rewards, with ms-swift's names, settings and values (swift/rewards/orm.py):

  accuracy       1.0 when the completion's answer is the row's `solution`, else 0.0 (answers.py)
  format         1.0 for "<think>...</think> <answer>...</answer>" and nothing after, else 0.0
  repetition     (1 - distinct n-grams / n-grams) * repetition_max_penalty, over lower-cased words; 0.0 for a
                 completion shorter than n words
  soft_overlong  DAPO's soft overlong punishment: 0 up to soft_max_length - soft_cache_length tokens, then falling
                 linearly to -1 at soft_max_length
  cosine         the length-scaled correctness of arXiv 2502.03373: a correct answer earns from
                 cosine_min_len_value_correct (no tokens) down to cosine_max_len_value_correct (cosine_max_len
                 tokens), a wrong one from cosine_min_len_value_wrong up to cosine_max_len_value_wrong

Each is a callable with TRL GRPOTrainer's reward signature, `f(prompts, completions, completion_ids=None, **columns)
-> list[float]`, whose completions are strings or, for conversational prompts, lists holding the assistant message.
Token counts come from `completion_ids` (TRL) or `response_token_ids` (ms-swift).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from tunewise.rewards import answers

FORMAT = re.compile(r"^<think>.*?</think>\s*<answer>.*?</answer>(?![\s\S])", re.DOTALL | re.MULTILINE)


@dataclass(frozen=True)
class RewardArgs:
    """The reward settings, under ms-swift's flag names and with its defaults. ms-swift-style plugin classes are built
    with this object as `args`, so they read the same attributes they read from ms-swift's GRPOConfig."""
    max_completion_length: int = 512
    cosine_min_len_value_wrong: float = -0.5
    cosine_max_len_value_wrong: float = 0.0
    cosine_min_len_value_correct: float = 1.0
    cosine_max_len_value_correct: float = 0.5
    cosine_max_len: int | None = None  # None: max_completion_length
    repetition_n_grams: int = 3
    repetition_max_penalty: float = -1.0
    soft_max_length: int | None = None  # None: max_completion_length
    soft_cache_length: int | None = None  # required by soft_overlong
    use_math_verify: bool | None = None  # None: when `math_verify` is importable


def text_of(completion) -> str:
    """A completion's text: the string itself, or the content of the last message of a message list (text parts of
    a multimodal content list joined)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if isinstance(completion, list) and completion:
        content = completion[-1].get("content") if isinstance(completion[-1], dict) else completion[-1]
        if isinstance(content, list):
            return "".join(part.get("text", "") for part in content if isinstance(part, dict))
        return "" if content is None else str(content)
    return ""


def token_counts(completions, completion_ids=None, response_token_ids=None, **_) -> list[int]:
    ids = completion_ids if completion_ids is not None else response_token_ids
    if ids is None:
        raise ValueError("this reward needs the completions' token ids (completion_ids)")
    return [len(row) for row in ids]


class Reward:
    """A built-in reward: `name` is what --reward_funcs calls it and what TRL logs it as (rewards/<name>/mean)."""
    name = ""
    needs: tuple[str, ...] = ()  # dataset columns every row must have

    def __init__(self, args: RewardArgs | None = None):
        self.args = args or RewardArgs()
        self.__name__ = self.name

    def __repr__(self):
        return f"<reward {self.name}>"


class Accuracy(Reward):
    name = "accuracy"
    needs = ("solution",)

    def __call__(self, prompts=None, completions=(), completion_ids=None, solution=(), **kwargs) -> list[float]:
        use = self.args.use_math_verify
        return [1.0 if answers.is_correct(text_of(c), str(s), use) else 0.0 for c, s in zip(completions, solution)]


class Format(Reward):
    name = "format"

    def __call__(self, prompts=None, completions=(), completion_ids=None, **kwargs) -> list[float]:
        return [1.0 if FORMAT.match(text_of(c)) else 0.0 for c in completions]


class Repetition(Reward):
    name = "repetition"

    def __call__(self, prompts=None, completions=(), completion_ids=None, **kwargs) -> list[float]:
        n, penalty = self.args.repetition_n_grams, self.args.repetition_max_penalty
        rewards = []
        for completion in completions:
            words = text_of(completion).lower().split()
            if len(words) < n:
                rewards.append(0.0)
                continue
            grams = list(zip(*[words[i:] for i in range(n)]))
            rewards.append((1 - len(set(grams)) / len(grams)) * penalty)
        return rewards


class SoftOverlong(Reward):
    name = "soft_overlong"

    def __call__(self, prompts=None, completions=(), completion_ids=None, **kwargs) -> list[float]:
        top, cache = soft_lengths(self.args)
        expected = top - cache
        lengths = token_counts(completions, completion_ids, **kwargs)
        return [min(-(length - expected) / cache, 0.0) for length in lengths]


class Cosine(Reward):
    name = "cosine"
    needs = ("solution",)

    def __call__(self, prompts=None, completions=(), completion_ids=None, solution=(), **kwargs) -> list[float]:
        a = self.args
        top = a.cosine_max_len or a.max_completion_length
        correct = Accuracy(a)(prompts, completions, completion_ids, solution)
        rewards = []
        for length, score in zip(token_counts(completions, completion_ids, **kwargs), correct):
            if score >= 1.0:
                start, end = a.cosine_min_len_value_correct, a.cosine_max_len_value_correct
            else:
                start, end = a.cosine_min_len_value_wrong, a.cosine_max_len_value_wrong
            rewards.append(cosine_value(length, top, start, end))
        return rewards


def cosine_value(length: int, top: int, start: float, end: float) -> float:
    """`start` at length 0, `end` at length `top`, along half a cosine (ms-swift's cosfn with min=end, max=start)."""
    return start - (start - end) * (1 - math.cos(length * math.pi / top)) / 2


def soft_lengths(args: RewardArgs) -> tuple[int, int]:
    """(soft_max_length, soft_cache_length), checked; soft_max_length defaults to max_completion_length."""
    from tunewise.errors import UserError

    top = args.soft_max_length or args.max_completion_length
    cache = args.soft_cache_length
    if cache is None:
        raise UserError("--reward_funcs soft_overlong needs --soft_cache_length (the length of the penalty ramp "
                        f"before --soft_max_length {top}).")
    if not 0 < cache < top:
        raise UserError(f"--soft_cache_length {cache} must be above 0 and below --soft_max_length {top} "
                        "(which defaults to --max_completion_length).")
    return top, cache


BUILTIN = {cls.name: cls for cls in (Accuracy, Format, Repetition, SoftOverlong, Cosine)}
