"""The data group's checks."""
import pytest

from tunewise.args import SftArgs
from tunewise.errors import UserError


@pytest.mark.parametrize("values, message", [
    ({"truncation_strategy": "middle"}, "--truncation_strategy middle: expected one of delete, left, right."),
    ({"split_dataset_ratio": 1.0}, "--split_dataset_ratio 1.0: must be in [0, 1)."),
    ({"max_length": 0}, "--max_length 0: must be at least 1."),
    ({"model_name": ["a", "b", "c"]}, "--model_name takes one or two values (Chinese, English), got 3."),
    ({"model_author": ["a", "b", "c"]}, "--model_author takes one or two values (Chinese, English), got 3."),
])
def test_data_problems(values, message):
    with pytest.raises(UserError) as e:
        SftArgs(**values)
    assert str(e.value) == message
