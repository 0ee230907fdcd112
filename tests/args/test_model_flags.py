"""The model group's checks (every command that loads a model has them)."""
import pytest

from tunewise.args import SftArgs
from tunewise.errors import UserError


@pytest.mark.parametrize("values, message", [
    ({"torch_dtype": "fp16"}, "--torch_dtype fp16: expected one of auto, float32, bfloat16, float16."),
    ({"attn_impl": "flashy"},
     "--attn_impl flashy: expected one of sdpa, eager, flash_attention_2, flash_attention_3, "
     "flex_attention."),
    ({"template": "alpaca"}, "--template alpaca: expected one of chatml, qwen, qwen3, llama3, plain."),
])
def test_model_problems(values, message):
    with pytest.raises(UserError) as e:
        SftArgs(**values)
    assert str(e.value) == message


def test_infer_has_the_model_checks_too():
    from tunewise.args import InferArgs

    with pytest.raises(UserError, match=r"^--torch_dtype x: expected one of auto"):
        InferArgs(torch_dtype="x")
    assert InferArgs(attn_impl=None, template=None).model is None
