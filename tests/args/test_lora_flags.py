"""The LoRA group's checks."""
import pytest

from tunewise.args import SftArgs
from tunewise.errors import UserError


@pytest.mark.parametrize("values, message", [
    ({"train_type": "qlora"}, "--train_type qlora: expected one of lora, full."),
    ({"lora_rank": 0}, "--lora_rank 0: must be at least 1."),
    ({"lora_alpha": 0}, "--lora_alpha 0: must be at least 1."),
    ({"lora_dropout": 2.0}, "--lora_dropout 2.0: must be in [0, 1)."),
    ({"lora_dropout": -0.1}, "--lora_dropout -0.1: must be in [0, 1)."),
    ({"train_type": "x", "lora_rank": 0, "lora_dropout": 1.0},
     "--train_type x: expected one of lora, full. --lora_rank 0: must be at least 1. --lora_dropout 1.0: "
     "must be in [0, 1)."),
])
def test_lora_problems(values, message):
    with pytest.raises(UserError) as e:
        SftArgs(**values)
    assert str(e.value) == message
