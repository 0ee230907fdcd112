import math

import pytest

from tunewise.errors import UserError
from tunewise.rewards.builtin import (
    BUILTIN,
    Accuracy,
    Cosine,
    Format,
    Repetition,
    RewardArgs,
    SoftOverlong,
    cosine_value,
    text_of,
)

PROMPT = [{"role": "user", "content": "23+15=?"}]


def chat(*texts):
    """Completions as TRL gives them for conversational prompts: one assistant message each."""
    return [[{"role": "assistant", "content": t}] for t in texts]


def test_names_are_ms_swifts():
    assert set(BUILTIN) == {"accuracy", "format", "repetition", "soft_overlong", "cosine"}
    assert all(cls(RewardArgs()).__name__ == name for name, cls in BUILTIN.items())  # TRL logs rewards/<name>/mean


def test_text_of_reads_strings_and_message_lists():
    assert text_of("a") == "a"
    assert text_of([{"role": "assistant", "content": "b"}]) == "b"
    assert text_of([{"role": "assistant", "content": [{"type": "text", "text": "c"}, {"type": "image"}]}]) == "c"
    assert text_of([{"role": "assistant", "content": None}]) == ""


def test_accuracy_on_numbers_words_and_boxes():
    acc = Accuracy(RewardArgs(use_math_verify=False))
    completions = chat("23+15=38", "23+15=37", "\\boxed{38}", "Paris", "paris.", "<answer>38</answer>")
    solutions = ["38", "38", "38", "London", "Paris", "23+15=38"]
    assert acc([PROMPT] * 6, completions, None, solution=solutions) == [1.0, 0.0, 1.0, 0.0, 1.0, 1.0]
    assert acc(["23+15=?"], ["23+15=38"], solution=[38]) == [1.0]  # plain-text completions, a number as solution


def test_format_is_think_then_answer_and_nothing_after():
    fmt = Format()
    assert fmt(None, chat("<think>a\nb</think>\n<answer>38</answer>", "<think>a</think><answer>38</answer> more",
                          "<answer>38</answer>", "38", "<think>x</think> <answer>\n38\n</answer>")) == \
        [1.0, 0.0, 0.0, 0.0, 1.0]


def test_repetition_penalises_repeated_trigrams():
    rep = Repetition(RewardArgs(repetition_n_grams=3, repetition_max_penalty=-1.0))
    # "a b c a b c a b c": 7 trigrams, 3 distinct -> (1 - 3/7) * -1
    rewards = rep(None, chat("a b c a b c a b c", "one two three four", "too short", "", "A B C a b c"))
    assert rewards[0] == pytest.approx(-(1 - 3 / 7))
    assert rewards[1:4] == [0.0, 0.0, 0.0]  # all distinct; fewer words than n; empty
    assert rewards[4] == pytest.approx(-(1 - 3 / 4))  # lower-cased before counting
    assert Repetition(RewardArgs(repetition_n_grams=1, repetition_max_penalty=-2.0))(None, ["x x x x"]) == [-1.5]


def test_soft_overlong_ramp_between_the_cache_start_and_the_maximum():
    soft = SoftOverlong(RewardArgs(max_completion_length=16, soft_cache_length=4))  # ramp from 12 to 16 tokens
    ids = [[0] * n for n in (5, 12, 13, 14, 16)]
    assert soft(None, ["x"] * 5, ids) == [0.0, 0.0, -0.25, -0.5, -1.0]
    # ms-swift's kwarg name for the token ids works too, and soft_max_length overrides max_completion_length
    soft = SoftOverlong(RewardArgs(max_completion_length=16, soft_max_length=10, soft_cache_length=5))
    assert soft(None, ["x"], response_token_ids=[[0] * 8]) == [-0.6]


def test_soft_overlong_needs_a_cache_length_below_the_maximum():
    with pytest.raises(UserError, match="--soft_cache_length"):
        SoftOverlong(RewardArgs())(None, ["x"], [[0]])
    with pytest.raises(UserError, match="below --soft_max_length 16"):
        SoftOverlong(RewardArgs(max_completion_length=16, soft_cache_length=16))(None, ["x"], [[0]])


def test_cosine_scales_correct_and_wrong_answers_by_length():
    args = RewardArgs(max_completion_length=10, use_math_verify=False)
    cos = Cosine(args)
    ids = [[0] * n for n in (0, 5, 10, 0, 5, 10)]
    rewards = cos([PROMPT] * 6, chat("38", "38", "38", "37", "37", "37"), ids, solution=["38"] * 6)
    # correct: 1.0 at length 0, 0.75 halfway, 0.5 at the maximum; wrong: -0.5, -0.25, 0.0 (ms-swift's defaults)
    assert rewards == pytest.approx([1.0, 0.75, 0.5, -0.5, -0.25, 0.0])
    assert cosine_value(5, 10, 1.0, 0.5) == pytest.approx(0.5 + 0.5 * (1 + math.cos(math.pi / 2)) / 2)
    longer = Cosine(RewardArgs(max_completion_length=10, cosine_max_len=20, use_math_verify=False))
    assert longer([PROMPT], chat("38"), [[0] * 10], solution=["38"]) == pytest.approx([0.75])
