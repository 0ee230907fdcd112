"""The run-directory group's checks: checkpoints, logs and trackers."""
import pytest

from tunewise.args import SftArgs
from tunewise.errors import UserError


@pytest.mark.parametrize("values, message", [
    ({"save_steps": -1}, "--save_steps -1: must be at least 1."),
    ({"logging_steps": 0}, "--logging_steps 0: must be at least 1."),
    ({"report_to": ["mlflow"]},
     "--report_to mlflow: expected tensorboard, wandb, swanlab, none (logging.jsonl and the plots are "
     "always written)."),
])
def test_run_dir_problems(values, message):
    with pytest.raises(UserError) as e:
        SftArgs(**values)
    assert str(e.value) == message


def test_a_tracker_that_is_not_installed_is_named(monkeypatch):
    import tunewise.args.run_dir as run_dir

    monkeypatch.setattr(run_dir, "installed", lambda package: package != "swanlab")
    with pytest.raises(UserError) as e:
        SftArgs(report_to=["wandb", "swanlab"])
    assert str(e.value) == ("--report_to swanlab: the swanlab package is not installed; pip install swanlab (it then "
                            "logs offline into the run directory unless you have logged in), or leave it out.")
    monkeypatch.setattr(run_dir, "installed", lambda package: True)
    assert SftArgs(report_to=["wandb", "swanlab"]).report_to == ["wandb", "swanlab"]
