"""The evaluation group's checks: validation, early stopping and the retention watch."""
import pytest

from tunewise.args import SftArgs
from tunewise.errors import UserError


@pytest.mark.parametrize("values, message", [
    ({"eval_steps": 0}, "--eval_steps 0: must be at least 1."),
    ({"retention_max_new_tokens": 0}, "--retention_max_new_tokens 0: must be at least 1."),
    ({"early_stop_on": "x"}, "--early_stop_on x: expected one of eval_loss, retention."),
    ({"early_stop_on": "retention"}, "--early_stop_on retention needs --retention_eval_steps N (how often to probe)."),
    ({"retention_eval_steps": -1}, "--retention_eval_steps -1: must be 0 (off) or more."),
    ({"retention_threshold": 2.0}, "--retention_threshold 2.0: must be in [0, 1] (an accuracy drop)."),
    ({"retention_dataset": ["x.jsonl"]},
     "--retention_dataset is only read by the retention watch: give --retention_eval_steps N."),
    ({"early_stop_patience": 0}, "--early_stop_patience 0: must be at least 1."),
])
def test_evaluation_problems(values, message):
    with pytest.raises(UserError) as e:
        SftArgs(**values)
    assert str(e.value) == message
