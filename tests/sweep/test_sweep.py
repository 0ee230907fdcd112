"""`tunewise sweep`: the grid from the flags, the loss-trend rule, the recommendation, and a tiny resumable sweep."""
import csv
import json
import math
import os

import pytest

from cli_runs import run_cli
from tunewise.errors import UserError
from tunewise.sweep import trend
from tunewise.sweep.grid import parse_grid
from tunewise.sweep.report import recommend, summary as summarize

IDENTITY = ["--model_name", "小黄", "Xiao Huang", "--model_author", "魔搭", "ModelScope"]


# --- the grid ------------------------------------------------------------------------------------------------
def test_scalar_comma_lists_are_axes_and_list_flags_are_not_split(tmp_path):
    grid = parse_grid(["--dataset", "self_cognition#8,tiny_skills#4", "--learning_rate", "1e-3,1e-4,5e-5",
                       "--num_train_epochs=3,5", "--target_modules", "q_proj,v_proj", *IDENTITY,
                       "--system", "Be brief, be kind.", "--tuner_type", "lora", "--output_dir", str(tmp_path)])
    assert [(a.name, a.values) for a in grid.axes] == [("learning_rate", ["1e-3", "1e-4", "5e-5"]),
                                                      ("num_train_epochs", ["3", "5"])]
    assert [t.name for t in grid.trials] == ["lr1e-3_ep3", "lr1e-3_ep5", "lr1e-4_ep3", "lr1e-4_ep5", "lr5e-5_ep3",
                                             "lr5e-5_ep5"]  # the first axis outermost
    trial = grid.trials[3]
    assert trial.values == {"learning_rate": "1e-4", "num_train_epochs": "5"}
    assert trial.dir == tmp_path / "trials" / "lr1e-4_ep5"
    argv = trial.full_argv()
    for fixed in (["--dataset", "self_cognition#8,tiny_skills#4"], ["--target_modules", "q_proj,v_proj"],
                  ["--model_name", "小黄", "Xiao Huang"], ["--system", "Be brief, be kind."],
                  ["--learning_rate", "1e-4"], ["--num_train_epochs", "5"],
                  ["--output_dir", str(trial.dir), "--add_version", "false"]):
        i = argv.index(fixed[0])
        assert argv[i:i + len(fixed)] == fixed, argv
    assert grid.system == "Be brief, be kind." and grid.sweep_dir == tmp_path
    assert grid.options.eval_general_limit == 0


def test_no_axis_is_one_trial_and_the_default_sweep_dir():
    grid = parse_grid(["--dataset", "self_cognition", "--learning_rate", "1e-4"])
    assert grid.axes == [] and [t.name for t in grid.trials] == ["single"]
    assert str(grid.sweep_dir) == os.path.join("output", "sweep")


@pytest.mark.parametrize("argv, message", [
    (["--learning_rate", "1e-3,abc", "--num_train_epochs", "3,x"], "--learning_rate abc: expected a number"),
    (["--learning_rate", "1e-3,-1"], "must be positive"),
    (["--learning_rate", "1e-3,1e-3"], "repeated value"),
    (["--lora_rank", "8", "--lerning_rate", "1e-3,1e-4"], "Unknown flag --lerning_rate"),
    (["--resume_from_checkpoint", "latest"], "resumes by itself"),
    (["--eval_general_limit", "-1"], "--eval_general_limit -1"),
    (["--dataset", "no_such_file.jsonl", "--learning_rate", "1e-3,1e-4"], "no_such_file.jsonl"),
])
def test_a_bad_value_stops_the_sweep_before_any_trial(tmp_path, capsys, argv, message):
    out = tmp_path / "sweep"
    if "--dataset" not in argv:
        argv = ["--dataset", "self_cognition", *argv]
    assert run_cli("sweep", *argv, "--output_dir", out) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_help_lists_the_sweep_flags(capsys):
    assert run_cli("sweep", "--help") == 0
    text = capsys.readouterr().out
    assert "--eval_general_limit" in text and "comma list" in text


# --- the loss-trend rule -------------------------------------------------------------------------------------
def _decay(n, floor=0.05, start=5.0, tau=8.0):
    return [start * math.exp(-i / tau) + floor for i in range(n)]


def test_trend_converged_even_when_noise_is_large_relative_to_a_loss_near_zero():
    assert trend.loss_trend(_decay(100)).label == "converged"
    noisy = [x + 0.01 * math.sin(2.3 * i) for i, x in enumerate(_decay(100, floor=0.01))]  # 0.01 +- 0.01
    result = trend.loss_trend(noisy)
    assert result.label == "converged" and result.scatter > 0.5 * result.level  # noisy, but tiny next to the start


def test_trend_still_falling():
    linear = [5 - 4 * i / 59 for i in range(60)]  # 5 -> 1, no bend
    assert trend.loss_trend(linear).label == "still falling"
    assert trend.loss_trend(_decay(100, tau=60)).label == "still falling"
    # a slow learner under a cosine schedule: its tail flattens only because the learning rate runs out
    lr = [min(1.0, i / 10) if i < 10 else 0.5 * (1 + math.cos(math.pi * (i - 10) / 190)) for i in range(200)]
    mass = [sum(lr[:i + 1]) for i in range(200)]
    assert trend.loss_trend([5.5 - m / mass[-1] for m in mass]).label == "still falling"


def test_trend_oscillating():
    bouncing = _decay(50, floor=1.0) + [1.0 + 0.8 * (-1) ** i for i in range(50)]
    assert trend.loss_trend(bouncing).label == "oscillating"


def test_trend_diverged():
    assert trend.loss_trend(_decay(30)[:20] + [float("nan")] + _decay(30)[21:]).label == "diverged"
    climbing = _decay(70, floor=0.5)[:70] + [0.5 + 0.1 * i for i in range(30)]
    assert trend.loss_trend(climbing).label == "diverged"
    stuck = [5.0 + 0.01 * i + 0.3 * math.sin(i) for i in range(60)]  # ends above where it started
    assert trend.loss_trend(stuck).label == "diverged"


def test_trend_too_short_and_final_loss():
    assert trend.loss_trend([5.0, 4.0, 3.0]).label == "too short"
    assert trend.loss_trend([]).label == "no losses logged"
    losses = list(range(20, 0, -1))  # the last 10 % = the last 2 values
    assert trend.final_loss(losses) == 1.5 and trend.end_mean(losses, last=False) == 19.5
    assert "converged" in trend.RULE and f"{trend.FALLING:g} × scale" in trend.RULE


# --- the recommendation --------------------------------------------------------------------------------------
def _rec(name, identity, retention, steps, parrot=0.0, label="converged", status="ok"):
    return {"name": name, "status": status, "values": {}, "total_steps": steps, "loss": {"label": label},
            "metrics": {"identity_accuracy": identity, "general_retention": retention,
                        "repeated_ngram_share": 0.0, "copied_training_answer_share": parrot}}


def test_recommend_best_identity_then_retention_then_repetition_then_steps():
    rows = [_rec("a", 0.9, 0.9, 100), _rec("b", 1.0, 0.7, 500), _rec("c", 1.0, 0.8, 1000),
            _rec("d", 1.0, 0.8, 300, parrot=0.2), _rec("e", 1.0, 0.8, 2000),
            _rec("f", 1.0, 1.0, 100, label="diverged"), _rec("g", 1.0, 1.0, 100, status="failed")]
    assert recommend(rows)["name"] == "c"
    assert recommend([rows[5], rows[6], _rec("h", 0.0, 1.0, 100)]) is None  # diverged, failed, learned nothing


def test_summary_names_the_recommended_point_and_the_stalled_trials():
    rows = [_rec("fast", 1.0, 0.8, 1000), _rec("slow", 0.0, 1.0, 1000), _rec("slower", 0.0, 1.0, 1000,
                                                                             label="still falling")]
    for row, final in zip(rows, (0.1, 4.2, 5.1)):
        row["loss"]["final"] = final
    text = summarize(rows, [], recommend(rows), {"model": "tunewise-tiny", "identity_accuracy": 0.0,
                                                 "general_accuracy": 0.93, "general_count": 200}, 4)
    assert text.startswith("Partial results: 3 of 4 trials so far. Recommended: fast (1000 steps): identity 100%")
    assert "Of the converged, slow flattened" in text and "slower flattened" not in text
    assert "tunewise-tiny: identity 0%, general accuracy 93.0% on 200 prompts" in text


def test_table_marks_the_recommended_trial():
    from tunewise.sweep.grid import Axis
    from tunewise.sweep.report import table

    rows = [_rec("a", 0.5, 0.9, 100), _rec("b", 1.0, 0.8, 200), _rec("c", None, None, 300, status="failed")]
    for row, lr in zip(rows, ("1e-3", "1e-4", "5e-5")):
        row["values"] = {"learning_rate": lr}
    rows[2]["error"] = "exit 1, see trials/lr5e-5/train.log"
    lines = table(rows, [Axis("learning_rate", "learning_rate", ["1e-3", "1e-4", "5e-5"])], recommend(rows))
    assert lines[0].startswith("| lr | steps | final loss | loss trend | identity |")
    assert lines[3].startswith("| 1e-4 | 200 |") and lines[3].endswith("**★ recommended** |")
    assert "★" not in lines[2] and "failed: exit 1" in lines[4]


# --- a tiny sweep, resumed -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_tiny_sweep_writes_results_and_resumes(tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["sweep", "--dataset", "self_cognition#8", *IDENTITY, "--max_steps", "5,6", "--logging_steps", "1",
            "--save_steps", "100", "--report_to", "none", "--eval_general_limit", "8", "--eval_max_new_tokens", "24",
            "--output_dir", out]
    assert run_cli(*argv) == 0
    first = capsys.readouterr().out
    assert "[1/2] steps5" in first and "[2/2] steps6" in first and "wrote" in first
    for name in ("results.csv", "results.md", "loss_curves.png", "base_eval.json", "sweep.json"):
        assert (out / name).is_file(), name
    assert (out / "loss_curves.png").read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.DictReader((out / "results.csv").open(encoding="utf-8")))
    assert [(r["trial"], r["status"], r["max_steps"], r["total_steps"]) for r in rows] == [
        ("steps5", "ok", "5", "5"), ("steps6", "ok", "6", "6")]
    assert all(r["loss_trend"] in trend.TRENDS and float(r["final_loss"]) > 0 for r in rows), rows
    assert all(r["identity_accuracy"] != "" and r["general_retention"] != "" for r in rows)
    md = (out / "results.md").read_text(encoding="utf-8")
    # 6 steps teach no identity, so no trial may be recommended; when one is, the csv and the table agree
    assert sum(r["recommended"] == "yes" for r in rows) == md.count("**★ recommended**") <= 1
    assert "**Recommended (★).**" in md
    assert "--max_steps 5,6" in md and "| max steps | steps | final loss | loss trend | identity |" in md
    assert "**still falling**" in md and "The base model tunewise-tiny: identity 0%" in md
    record = json.loads((out / "trials" / "steps6" / "trial.json").read_text(encoding="utf-8"))
    assert record["status"] == "ok" and record["values"] == {"max_steps": "6"}
    assert (out / "trials" / "steps6" / "eval.json").is_file() and (out / "trials" / "steps6" / "train.log").is_file()

    # steps6 was interrupted after training (no trial.json): it is run again from scratch; steps5 is skipped
    done = out / "trials" / "steps5" / "trial.json"
    mtime = done.stat().st_mtime_ns
    (out / "trials" / "steps6" / "trial.json").unlink()
    (out / "trials" / "steps6" / "leftover").write_text("x")
    assert run_cli(*argv) == 0
    second = capsys.readouterr().out
    assert "[1/2] steps5 (--max_steps 5, 5 steps): skipped" in second and "[2/2] steps6" in second
    assert "evaluating the base model" not in second  # measured once per sweep
    assert done.stat().st_mtime_ns == mtime
    assert (out / "trials" / "steps6" / "trial.json").is_file() and not (out / "trials" / "steps6" / "leftover").exists()
    assert len(list(csv.DictReader((out / "results.csv").open(encoding="utf-8")))) == 2

    # the same sweep directory with other fixed flags: refused before any training
    assert run_cli(*argv, "--seed", "7") == 2
    assert "was run with other flags" in capsys.readouterr().err


def test_parse_grid_refuses_two_lists_of_one_flag():
    for second in ("1e-5,1e-6", "1e-5"):
        with pytest.raises(UserError, match="--learning_rate is given twice.$"):
            parse_grid(["--learning_rate", "1e-3,1e-4", "--learning_rate", second])


def test_a_sweep_refuses_a_folder_that_is_not_a_sweeps(tmp_path, capsys):
    (tmp_path / "thesis.tex").write_text("mine")
    assert run_cli("sweep", "--dataset", "self_cognition#8", "--model_name", "N", "--model_author", "A",
                   "--learning_rate", "1e-3,1e-4", "--max_steps", "2", "--output_dir", tmp_path) == 2
    assert "holds files that are not a sweep's (thesis.tex)" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis.tex"]
