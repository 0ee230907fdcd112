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
