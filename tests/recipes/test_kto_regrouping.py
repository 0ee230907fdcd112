"""KTO's per-device batch of 1 (tunewise.args.kto, tunewise.recipes.kto): TRL's KTOTrainer takes each row's KL reply
from the other rows of its per-device batch, so 1 x k runs as 2 x k/2 where k is even (the same rows in each optimizer
step, the same steps, the same weight for each row), said in the plan; where k is 1 or odd it is refused."""
import json
import re

import pytest

from cli_runs import read_log, run_cli
from tunewise.args import KtoArgs
from tunewise.args.kto import kl_regrouping
from tunewise.errors import UserError
from tunewise.plan.schedule import plan_steps
from tunewise.recipes.kto import regroup

BASE = {"dataset": ["kto.jsonl"]}


@pytest.mark.parametrize("loss_type, batch, accumulation, runs_as", [
    ("kto", 1, 8, (2, 4)), ("kto", 1, 2, (2, 1)), ("kto", 1, 16, (2, 8)),
    ("kto", 2, 8, None), ("kto", 2, 1, None), ("kto", 3, 3, None),  # a batch of 2 or more runs as given
    ("apo_zero_unpaired", 1, 8, None), ("apo_zero_unpaired", 1, 3, None), ("apo_zero_unpaired", 1, 1, None),  # no KL
])
def test_which_batches_run_regrouped(loss_type, batch, accumulation, runs_as):
    assert kl_regrouping(loss_type, batch, accumulation) == runs_as
    args = KtoArgs(**BASE, loss_type=loss_type, per_device_train_batch_size=batch,
                   gradient_accumulation_steps=accumulation)  # none of them is refused
    changes, notes = regroup(args, {"per_device_train_batch_size": "default", "gradient_accumulation_steps": "flag"}, 1)
    assert bool(changes) == bool(notes) == (runs_as is not None)


@pytest.mark.parametrize("accumulation, give", [
    (1, "--gradient_accumulation_steps 2 (run as 2 x 1), or"),
    (3, "--gradient_accumulation_steps 2 (run as 2 x 1) or 4 (run as 2 x 2), or"),
])
def test_a_batch_of_1_that_cannot_be_regrouped_is_refused_with_what_to_give(accumulation, give):
    with pytest.raises(UserError) as e:
        KtoArgs(**BASE, per_device_train_batch_size=1, gradient_accumulation_steps=accumulation)
    assert str(e.value) == (
        f"--per_device_train_batch_size 1 with --gradient_accumulation_steps {accumulation}: KTO estimates its KL term "
        "from the other rows of a per-device batch, so a batch of 1 runs as 2 rows with half the accumulation, which "
        f"needs an even --gradient_accumulation_steps; give {give} --per_device_train_batch_size 2 or more, or "
        "--loss_type apo_zero_unpaired (no KL term).")


def test_the_regrouping_keeps_the_values_given_in_their_sources_and_says_so():
    args = KtoArgs(**BASE, gradient_accumulation_steps=8)
    changes, notes = regroup(args, {"per_device_train_batch_size": "default", "gradient_accumulation_steps": "flag"}, 2)
    assert changes == {"per_device_train_batch_size": (2, "default 1, regrouped for KTO's KL term"),
                       "gradient_accumulation_steps": (4, "flag 8, regrouped for KTO's KL term")}
    assert notes == ["note: KTO estimates its KL term from the other rows of a per-device batch; "
                     "--per_device_train_batch_size 1 x --gradient_accumulation_steps 8 runs as 2 x 4 (the same "
                     "16-row global batch, 8 rows a process)."]
    _, (one_process,) = regroup(args, {}, 1)
    assert one_process.endswith("runs as 2 x 4 (the same 8-row global batch).")


def test_the_regrouped_run_has_the_same_optimizer_steps_for_any_number_of_rows_and_processes():
    for accumulation in range(2, 33, 2):
        for world_size in range(1, 9):
            for rows in range(1, 300):
                given = plan_steps(rows, 1, accumulation, world_size)
                regrouped = plan_steps(rows, 2, accumulation // 2, world_size)
                assert (given.steps_per_epoch, given.global_batch_size) == (
                    regrouped.steps_per_epoch, regrouped.global_batch_size), (rows, accumulation, world_size)


def unpaired_rows(tmp_path, n):
    path = tmp_path / "kto.jsonl"
    lines = [{"messages": [{"role": "user", "content": f"{i}+3=?"},
                           {"role": "assistant", "content": f"{i + 3}." if i % 2 else f"It might be {i + 2}, maybe."}],
              "label": bool(i % 2)} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path


def test_the_plan_of_a_batch_of_1_is_the_plan_of_2_with_half_the_accumulation(tmp_path, capsys):
    data = unpaired_rows(tmp_path, 40)
    plans = {}
    for name, batch, accumulation in (("given", "1", "8"), ("regrouped", "2", "4")):
        assert run_cli("plan", "--rlhf_type", "kto", "--dataset", data, "--per_device_train_batch_size", batch,
                       "--gradient_accumulation_steps", accumulation, "--output_dir", tmp_path / name) == 0
        plans[name] = json.loads((tmp_path / name / "plan.json").read_text())
    out = capsys.readouterr().out
    assert re.search(r"batch per device +2 +flag 1, regrouped for KTO's KL term\n", out)
    assert re.search(r"gradient accumulation +4 +flag 8, regrouped for KTO's KL term\n", out)
    given, regrouped = plans["given"], plans["regrouped"]
    assert [note for note in given["extra"]["notes"] if note not in regrouped["extra"]["notes"]] == [
        "note: KTO estimates its KL term from the other rows of a per-device batch; --per_device_train_batch_size 1 x "
        "--gradient_accumulation_steps 8 runs as 2 x 4 (the same 8-row global batch)."]
    for part in ("steps", "schedule", "key_points", "trainer_kwargs"):
        assert given[part] == regrouped[part]
    assert given["extra"]["memory"] == regrouped["extra"]["memory"]  # the estimate is for the batch of 2 that runs
    assert given["steps"]["per_device_train_batch_size"] == 2


def first_two_steps(tmp_path, name, data, *flags):
    out = tmp_path / name
    assert run_cli("rlhf", "--rlhf_type", "kto", "--report_to", "none", "--dataset", data, "--max_steps", "2",
                   "--logging_steps", "1", "--warmup_ratio", "0", "--save_steps", "2", "--output_dir", out,
                   "--add_version", "false", *flags) == 0
    return [r for r in read_log(out) if "loss" in r]


@pytest.mark.slow  # four short KTO runs, a policy and its reference each
def test_a_regrouped_run_trains_as_2_x_half_and_a_batch_of_1_weighs_each_row_as_2_x_half_does(tmp_path):
    data = unpaired_rows(tmp_path, 16)
    given = first_two_steps(tmp_path, "given", data, "--per_device_train_batch_size", "1",
                            "--gradient_accumulation_steps", "4")
    regrouped = first_two_steps(tmp_path, "regrouped", data, "--per_device_train_batch_size", "2",
                                "--gradient_accumulation_steps", "2")
    keys = ("loss", "grad_norm", "kl", "rewards/chosen", "rewards/rejected", "logps/chosen", "lr")
    assert [r["step"] for r in given] == [1, 2]
    assert [[r[k] for k in keys] for r in given] == [[r[k] for k in keys] for r in regrouped]  # the very same run
    assert given[1]["rewards/chosen"] != 0 != given[1]["rewards/rejected"]  # step 2 follows a real update
    # the per-row weights: APO-zero has no KL term, so TRL runs its batch of 1 as given; KTOTrainer's loss is the mean
    # over a micro-batch, divided by the accumulation, so 1 x 4 and 2 x 2 give each row 1/4 of the step's gradient
    ones = first_two_steps(tmp_path, "apo1", data, "--loss_type", "apo_zero_unpaired",
                           "--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "4")
    twos = first_two_steps(tmp_path, "apo2", data, "--loss_type", "apo_zero_unpaired",
                           "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "2")
    for one, two in zip(ones, twos):
        for key in ("loss", "grad_norm", "rewards/chosen", "rewards/rejected"):
            assert one[key] == pytest.approx(two[key], rel=1e-4, abs=1e-7), key
