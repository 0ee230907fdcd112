"""The orpo, simpo and cpo groups' checks and defaults (tunewise.args.orpo, tunewise.args.cpo): ms-swift's names and
defaults, no --ref_model, every problem named with its flag."""
import dataclasses

import pytest

from tunewise.args import (AdapterStartArgs, CpoArgs, CpoFlags, OrpoArgs, OrpoFlags, SftArgs, SimpoArgs, SimpoFlags,
                           TrainerLossArgs)
from tunewise.errors import UserError


def names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def test_the_commands_are_the_sft_flags_plus_where_they_start_plus_their_own():
    assert set(names(TrainerLossArgs)) <= set(names(SftArgs))  # the trainer-loss group overrides sft fields only
    assert names(OrpoArgs) == names(SftArgs) + names(AdapterStartArgs) + names(OrpoFlags)
    assert names(CpoArgs) == names(SftArgs) + names(AdapterStartArgs) + names(CpoFlags)
    assert names(SimpoArgs) == names(CpoArgs) and "ref_model" not in names(CpoArgs)


def test_ms_swifts_defaults_and_simpos_own():
    assert (OrpoArgs().beta, OrpoArgs().recipe()) == (0.1, "orpo_lora")
    cpo = CpoArgs()
    assert (cpo.beta, cpo.loss_type, cpo.cpo_alpha, cpo.simpo_gamma, cpo.label_smoothing) == (0.1, "sigmoid", 1.0, 1.0, 0)
    simpo = SimpoArgs(train_type="full")
    assert (simpo.beta, simpo.loss_type, simpo.cpo_alpha, simpo.simpo_gamma) == (2.0, "simpo", 0.0, 1.0)
    assert simpo.recipe() == "simpo_full" and CpoArgs().recipe() == "cpo_lora"


@pytest.mark.parametrize("cls, values, message", [
    (OrpoArgs, {"beta": -1.0}, "--beta -1.0: must be positive (ORPO's lambda)."),
    (CpoArgs, {"loss_type": "sigmoid,ipo"}, "--loss_type sigmoid,ipo: expected one of sigmoid, hinge, ipo, simpo."),
    (CpoArgs, {"beta": 0.0, "cpo_alpha": -1.0},
     "--beta 0.0: must be positive. --cpo_alpha -1.0: must be >= 0."),
    (CpoArgs, {"simpo_gamma": 0.5},
     "--simpo_gamma 0.5: SimPO's margin is used only with --loss_type simpo (this run's is sigmoid)."),
    (CpoArgs, {"label_smoothing": 0.5}, "--label_smoothing 0.5: must be in [0, 0.5)."),
    (CpoArgs, {"loss_type": "ipo", "label_smoothing": 0.1},
     "--label_smoothing 0.1: the ipo loss has no label smoothing (only sigmoid and simpo do)."),
    (SimpoArgs, {"loss_type": "hinge"},
     "--loss_type hinge: --rlhf_type simpo trains SimPO's loss; for hinge, use --rlhf_type cpo --loss_type hinge."),
    (SimpoArgs, {"simpo_gamma": -0.5}, "--simpo_gamma -0.5: must be >= 0."),
    (SimpoArgs, {"adapters": ["a", "b"]}, "--adapters: give one checkpoint to start from."),
    (OrpoArgs, {"chunked_loss": True}, "--chunked_loss true: an sft option; orpo pads its preference pairs and TRL "
                                       "computes their log-probabilities over every position."),
])
def test_problems(cls, values, message):
    with pytest.raises(UserError) as e:
        cls(**values)
    assert str(e.value) == message


def test_values_that_work_together():
    CpoArgs(loss_type="simpo", simpo_gamma=0.5, label_smoothing=0.1)
    CpoArgs(loss_type="hinge", cpo_alpha=0.0)
    SimpoArgs(cpo_alpha=1.0, beta=2.5, simpo_gamma=1.4)
