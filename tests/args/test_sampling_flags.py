"""The sampling group's checks (tunewise infer)."""
import pytest

from tunewise.args import InferArgs
from tunewise.errors import UserError


@pytest.mark.parametrize("values, message", [
    ({"max_new_tokens": 0}, "--max_new_tokens 0: must be at least 1."),
    ({"top_k": -1}, "--top_k -1: must be at least 0."),
    ({"temperature": -1.0}, "--temperature -1.0: must be 0 (greedy) or more."),
    ({"top_p": 2.0}, "--top_p 2.0: must be in (0, 1]."),
    ({"repetition_penalty": 0.0}, "--repetition_penalty 0.0: must be positive."),
])
def test_sampling_problems(values, message):
    with pytest.raises(UserError) as e:
        InferArgs(**values)
    assert str(e.value) == message


def test_sampling_of_takes_the_sampling_fields():
    from tunewise.args import Sampling

    assert Sampling.of(InferArgs(temperature=0.7, seed=3)) == Sampling(temperature=0.7, seed=3)
