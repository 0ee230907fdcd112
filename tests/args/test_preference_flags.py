"""The preference (dpo) group's checks and losses."""
import pytest

from tunewise.args import DpoArgs
from tunewise.errors import UserError


@pytest.mark.parametrize("values, message", [
    ({"loss_type": ["bogus"]},
     "--loss_type bogus: expected one or more of sigmoid, hinge, ipo, exo_pair, nca_pair, robust, "
     "bco_pair, sppo_hard, aot, aot_unpaired, apo_zero, apo_down, discopop, sft, sigmoid_norm."),
    ({"loss_type": []},
     "--loss_type (empty): expected one or more of sigmoid, hinge, ipo, exo_pair, nca_pair, robust, "
     "bco_pair, sppo_hard, aot, aot_unpaired, apo_zero, apo_down, discopop, sft, sigmoid_norm."),
    ({"loss_weights": [1.0, 2.0]}, "--loss_weights has 2 values for 1 loss types."),
    ({"beta": 0.0}, "--beta 0.0: must be positive."),
    ({"rpo_alpha": -1.0}, "--rpo_alpha -1.0: must be >= 0."),
    ({"label_smoothing": 0.5}, "--label_smoothing 0.5: must be in [0, 0.5)."),
    ({"loss_type": ["exo_pair"]}, "--loss_type exo_pair needs --label_smoothing > 0 (the EXO paper uses 1e-3)."),
    ({"adapters": ["a", "b"]}, "--adapters: give one checkpoint to start from."),
    ({"padding_free": True, "packing": True},
     "--padding_free true: an sft option; dpo pads its preference pairs and TRL computes their "
     "log-probabilities over every position. --packing true: an sft option; dpo pads its preference pairs "
     "and TRL computes their log-probabilities over every position."),
    # alone: one message (sft's "--packing needs padding-free batches" was appended before, about an sft rule)
    ({"packing": True}, "--packing true: an sft option; dpo pads its preference pairs and TRL computes their "
                        "log-probabilities over every position."),
])
def test_preference_problems(values, message):
    with pytest.raises(UserError) as e:
        DpoArgs(**values)
    assert str(e.value) == message


def test_rpo_alpha_adds_the_sft_loss():
    assert DpoArgs().losses() == (["sigmoid"], [1.0])
    assert DpoArgs(loss_type=["sigmoid", "ipo"], loss_weights=[1.0, 0.5], rpo_alpha=0.2).losses() == (
        ["sigmoid", "ipo", "sft"], [1.0, 0.5, 0.2])
