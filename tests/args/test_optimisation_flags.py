"""The optimisation group's checks and the learning rate's default."""
import pytest

from tunewise.args import SftArgs
from tunewise.errors import UserError
from tunewise.flags import parse


def test_full_fine_tuning_defaults_to_a_tenth_of_the_lora_rate():
    lora, sources, _ = parse(SftArgs, ["--dataset", "d.jsonl"])
    full, _, _ = parse(SftArgs, ["--dataset", "d.jsonl", "--train_type", "full"])
    assert lora.learning_rate == 1e-4 and full.learning_rate == 1e-5 and sources["learning_rate"] == "default"
    given, sources, _ = parse(SftArgs, ["--train_type", "full", "--learning_rate", "3e-5"])
    assert given.learning_rate == 3e-5 and sources["learning_rate"] == "flag"


@pytest.mark.parametrize("values, message", [
    ({"warmup_ratio": 0.1, "warmup_steps": 3}, "--warmup_ratio and --warmup_steps are both set; give one."),
    ({"warmup_ratio": 1.5}, "--warmup_ratio 1.5: must be in [0, 1)."),
    ({"per_device_train_batch_size": 0}, "--per_device_train_batch_size 0: must be at least 1."),
    ({"per_device_eval_batch_size": 0}, "--per_device_eval_batch_size 0: must be at least 1."),
    ({"gradient_accumulation_steps": 0}, "--gradient_accumulation_steps 0: must be at least 1."),
    ({"learning_rate": -1.0}, "--learning_rate -1.0: must be positive."),
    ({"num_train_epochs": 0}, "--num_train_epochs must be positive (or give --max_steps)."),
    ({"lr_scheduler_kwargs": "[1]"}, "--lr_scheduler_kwargs [1]: expected a JSON object."),
    ({"lr_scheduler_kwargs": "notjson"}, "--lr_scheduler_kwargs notjson: expected a JSON object."),
    ({"schedule_guard": "maybe"}, "--schedule_guard maybe: expected one of error, warn, off."),
    ({"nan_policy": "ignore"}, "--nan_policy ignore: expected one of stop, skip."),
])
def test_optimisation_problems(values, message):
    with pytest.raises(UserError) as e:
        SftArgs(**values)
    assert str(e.value) == message


def test_epochs_may_be_zero_with_max_steps_and_scheduler_kwargs_are_read():
    args = SftArgs(num_train_epochs=0, max_steps=5, lr_scheduler_kwargs='{"min_lr_rate": 0.1}')
    assert args.scheduler_kwargs() == {"min_lr_rate": 0.1} and SftArgs().scheduler_kwargs() == {}
