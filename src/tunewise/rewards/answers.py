"""Is a completion's answer the solution? An exact or numeric match of the extracted answers, or, when `math-verify`
is installed, math-verify's equivalence (as in ms-swift's `accuracy`): either suffices, so installing math-verify
only adds equivalences (\\frac{1}{2} = 0.5, sets, intervals) and never loses a plain match such as "23+15=38" for
38, which math-verify's first-match extraction may read otherwise. (math-verify is not in the project's venv: that
path is tested with a stand-in module.)

The answer of a text is, in this order: the inside of its <answer>...</answer> tags, the inside of its last
\\boxed{...}, or, when the solution is a number, the last number in the text ("23+15=38" answers 38); a solution
that is not a number is compared with the whole completion. Comparison ignores surrounding `$`, spaces, a final
period and case; two numbers (integers, decimals, fractions a/b, with thousands commas) match when equal.
"""
from __future__ import annotations

import importlib.util
import re
from fractions import Fraction

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_FINAL = re.compile(r"####\s*(.+)")  # GSM8K marks its final answer "#### 72"


def has_math_verify() -> bool:
    return importlib.util.find_spec("math_verify") is not None


def boxed(text: str) -> str | None:
    """The inside of the last \\boxed{...} (braces balanced), or None."""
    start = text.rfind("\\boxed")
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        return None
    depth = 0
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1:j]
    return None


def tagged(text: str) -> str | None:
    """The inside of the first <answer>...</answer>, stripped, or None."""
    match = _ANSWER_TAG.search(text)
    return match.group(1).strip() if match else None


def normalise(text: str) -> str:
    text = text.strip().strip("$").strip()
    text = re.sub(r"\\text\{([^{}]*)\}", r"\1", text)
    text = text.rstrip(".").strip()
    return re.sub(r"\s+", " ", text).lower()


def as_number(text: str) -> Fraction | None:
    """A number written as an integer, decimal or fraction (thousands commas allowed), or None."""
    text = normalise(text).replace(",", "").replace(" ", "")
    if not text or not re.fullmatch(r"-?(\d+(\.\d+)?|\.\d+)(/\d+)?", text):
        return None
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None


def last_number(text: str) -> str | None:
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def gold_answer(solution: str) -> str:
    """The answer a solution states: its <answer> tag, its last \\boxed{}, a GSM8K '#### X' line, the whole text
    when it is a number, else its last number, else the whole text (an answer in words)."""
    for found in (tagged(solution), boxed(solution)):
        if found is not None:
            return found
    final = _FINAL.search(solution)
    if final:
        return final.group(1).strip()
    if as_number(solution) is not None:
        return solution.strip()
    return last_number(solution) or solution.strip()


def completion_answer(completion: str, numeric: bool) -> str | None:
    """The answer a completion gives; None when it gives none (no tag, box or number where a number is wanted)."""
    for found in (tagged(completion), boxed(completion)):
        if found is not None:
            return found
    return last_number(completion) if numeric else completion


def same_answer(completion: str, solution: str) -> bool:
    """Exact or numeric match of the two answers (see the module docstring); never uses math-verify."""
    gold = gold_answer(solution)
    gold_number = as_number(gold)
    answer = completion_answer(completion, gold_number is not None)
    if answer is None:
        return False
    if gold_number is not None:
        return as_number(answer) == gold_number
    return normalise(answer) == normalise(gold)


def verified(completion: str, solution: str) -> bool:
    """math-verify's judgement (ms-swift's use: the <answer> tag's inside when there is one, first match); a solution
    math-verify cannot parse falls back to `same_answer`."""
    from math_verify import parse, verify

    gold = parse(tagged(solution) or solution, extraction_mode="first_match")
    if not gold:
        return same_answer(completion, solution)
    answer = parse(tagged(completion) or completion, extraction_mode="first_match")
    try:
        return bool(verify(gold, answer))
    except Exception:  # math-verify raises on some malformed expressions; ms-swift scores them 0 too
        return False


def is_correct(completion: str, solution: str, use_math_verify: bool | None = None) -> bool:
    """`same_answer`, or math-verify's judgement when `use_math_verify` (None: when it is importable)."""
    if same_answer(completion, solution):
        return True
    if use_math_verify is None:
        use_math_verify = has_math_verify()
    return use_math_verify and verified(completion, solution)
