import pytest

from tunewise.rewards import answers


@pytest.mark.parametrize("completion, solution, correct", [
    ("23+15=38", "38", True),  # the embedded model's form: the last number
    ("23+15=39", "38", False),
    ("The answer is 38.", "38", True),
    ("38", "23+15=38", True),  # a {query, response} row's response as the solution: its last number
    ("It is 1,234", "1234", True),  # thousands commas
    ("0.50", "1/2", True),  # decimals and fractions compare as numbers
    ("-7", "-7", True),
    ("no number here", "38", False),
    ("", "38", False),
    ("so \\boxed{42} and then 7", "42", True),  # a boxed answer wins over the last number
    ("\\boxed{\\frac{1}{2}} ", "\\boxed{\\frac{1}{2}}", True),  # boxed vs boxed: the same text
    ("<think>3 or 4?</think><answer>4</answer>", "<answer>4</answer>", True),  # the answer tag wins
    ("<think>4</think><answer>3</answer>", "4", False),
    ("Paris.", "Paris", True),  # LaTeX-free answers in words: case, final period, spaces
    ("  paris ", "Paris", True),
    ("Paris, France", "Paris", False),
    ("$38$", "38", True),
    ("Natalia sold 48+24 = 72 clips.", "She sold 48/2 = 24 in May.\n#### 72", True),  # GSM8K's '#### 72'
])
def test_exact_or_numeric_match(completion, solution, correct):
    assert answers.is_correct(completion, solution, use_math_verify=False) is correct


def test_boxed_takes_the_last_box_with_balanced_braces():
    assert answers.boxed("\\boxed{1} then \\boxed{\\frac{a}{b}}") == "\\frac{a}{b}"
    assert answers.boxed("\\boxed{unclosed") is None
    assert answers.boxed("none") is None


def test_math_verify_is_used_only_when_importable(monkeypatch):
    monkeypatch.setattr(answers, "has_math_verify", lambda: False)
    assert answers.is_correct("1+1=2", "2") is True  # the fallback, no import of math_verify
    assert answers.is_correct("\\frac{1}{2}", "0.5") is False


def test_math_verify_adds_equivalences_and_keeps_plain_matches(monkeypatch):
    """A stand-in math_verify (the real one is not installed here): it parses only \\frac{a}{b} and numbers, as
    ms-swift calls it: first match, the <answer> tag's inside when there is one."""
    import re
    import sys
    import types
    from fractions import Fraction

    calls = []

    def parse(text, extraction_mode=None):
        calls.append((text, extraction_mode))
        frac = re.search(r"\\frac\{(\d+)\}\{(\d+)\}", text)
        if frac:
            return [Fraction(int(frac[1]), int(frac[2]))]
        number = re.search(r"\d+(\.\d+)?", text)
        return [Fraction(number[0])] if number else []

    fake = types.ModuleType("math_verify")
    fake.parse, fake.verify = parse, lambda gold, answer: bool(answer) and gold[0] == answer[0]
    monkeypatch.setitem(sys.modules, "math_verify", fake)
    assert answers.is_correct("\\frac{1}{2}", "0.5", use_math_verify=True) is True
    assert ("\\frac{1}{2}", "first_match") in calls
    assert answers.is_correct("<answer>\\frac{2}{4}</answer>", "<answer>0.5</answer>", use_math_verify=True) is True
    # "23+15=38": the stand-in reads 23 first, the plain match still counts it right
    assert answers.is_correct("23+15=38", "38", use_math_verify=True) is True
    assert answers.is_correct("23+15=39", "38", use_math_verify=True) is False
    fake.verify = lambda gold, answer: 1 / 0  # math-verify raising on a malformed expression scores 0, as in ms-swift
    assert answers.is_correct("\\frac{1}{3}", "0.5", use_math_verify=True) is False
