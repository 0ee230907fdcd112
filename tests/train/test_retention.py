"""The retention watch: probes logged during training, a warning, and a stop when the general skill collapses."""
from types import SimpleNamespace

import pytest

from cli_runs import read_log, run_cli
from tunewise.train.callbacks import BestTracker
from tunewise.train.retention import combined_score

IDENTITY = ["--model_name", "小黄", "Xiao Huang", "--model_author", "魔搭", "ModelScope"]


def test_a_collapsing_run_is_stopped_with_a_clear_message_and_the_best_kept(tmp_path, capsys):
    # lr 5e-2 is 50x the model's recommended 1e-3: the additions collapse within 10 steps and stay down (measured
    # with this command: 0.90 at the start, 0.00-0.02 at step 10 and 0.00 at step 20 for seeds 42/1/2 x CPU kinds
    # avx512/avx2/default; the stop needs a drop over 0.05 at two probes in a row, so the margin is 0.83).
    rc = run_cli("sft", "--dataset", "self_cognition#20", *IDENTITY, "--max_steps", 40, "--learning_rate", 5e-2,
                 "--retention_eval_steps", 10, "--early_stop_on", "retention", "--report_to", "none",
                 "--output_dir", tmp_path, "--add_version", "false")
    assert rc == 0
    out = capsys.readouterr().out
    assert "WARNING: retention watch: at step 10 the general-skill probes score" in out
    assert "the run stops if 2 probes in a row are this low" in out
    assert "retention watch: at step 20 the general-skill probes score" in out and "2 probes in a row)" in out
    assert "Stopping (--early_stop_on retention)" in out and "A lower --learning_rate" in out
    probes = [r for r in read_log(tmp_path) if "retention" in r]
    assert [r["step"] for r in probes] == [0, 10, 20]  # before the first step, then every 10; stopped at the 2nd drop
    assert probes[0]["retention"] >= 0.8 and all(r["retention"] < probes[0]["retention"] - 0.05 for r in probes[1:])
    assert all(r["retention_start"] == probes[0]["retention"] for r in probes)
    assert all(k in probes[1] for k in ("identity", "identity_zh", "identity_en", "identity_mentions", "retention_s"))
    # a checkpoint at every probe (the best by identity + retention must exist); the run ended at step 20 of 40
    assert (tmp_path / "last").resolve().name == "checkpoint-20"
    assert (tmp_path / "best").resolve().is_dir()
    assert "best checkpoint:" in out and "(identity + retention" in out
    assert (tmp_path / "loss.png").is_file()


def test_without_early_stop_it_warns_and_trains_on(tmp_path, capsys):
    rc = run_cli("sft", "--dataset", "self_cognition#20", *IDENTITY, "--max_steps", 20, "--learning_rate", 5e-2,
                 "--retention_eval_steps", 10, "--report_to", "none", "--output_dir", tmp_path, "--add_version", "false")
    assert rc == 0
    out = capsys.readouterr().out
    assert "WARNING: retention watch: at step 10" in out and "--early_stop_on retention stops a run that" in out
    assert [r["step"] for r in read_log(tmp_path) if "retention" in r] == [0, 10, 20]
    assert (tmp_path / "last").resolve().name == "checkpoint-20"
    assert "retention watch: general skill" in out and "(3 probes," in out


def test_a_user_probe_set_is_scored_by_containment(tmp_path):
    probes = tmp_path / "probes.jsonl"
    probes.write_text('{"query": "12+34=?", "response": "46"}\n{"query": "计算 3+4", "response": "7"}\n',
                      encoding="utf-8")
    out = tmp_path / "run"
    assert run_cli("sft", "--dataset", "self_cognition#8", *IDENTITY, "--max_steps", 2, "--retention_eval_steps", 2,
                   "--retention_dataset", probes, "--report_to", "none", "--output_dir", out,
                   "--add_version", "false") == 0
    records = [r for r in read_log(out) if "retention" in r]
    assert [r["step"] for r in records] == [0, 2]
    assert records[0]["retention"] == 1.0  # the base model answers both (12+34=46, 3+4=7)


@pytest.mark.parametrize("flags, message", [
    (["--early_stop_on", "retention"], "--early_stop_on retention needs --retention_eval_steps"),
    (["--early_stop_on", "accuracy"], "--early_stop_on accuracy: expected one of eval_loss, retention"),
    (["--retention_eval_steps", "-1"], "--retention_eval_steps -1: must be 0 (off) or more"),
    (["--retention_threshold", "2"], "--retention_threshold 2.0: must be in [0, 1]"),
    (["--retention_dataset", "x.jsonl"], "--retention_dataset is only read by the retention watch"),
])
def test_bad_watch_flags_are_refused_before_anything_is_written(tmp_path, capsys, flags, message):
    assert run_cli("sft", "--dataset", "self_cognition", *flags, "--output_dir", tmp_path / "out") == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_model_without_builtin_probes_needs_a_retention_dataset(tmp_path, capsys):
    import shutil

    from tunewise.models.load import resolve_model

    plain = tmp_path / "plain-qwen2"  # the embedded model's files without its tunewise.json: any HF directory
    shutil.copytree(resolve_model("tunewise-tiny"), plain, ignore=shutil.ignore_patterns("tunewise.json"))
    assert run_cli("sft", "--model", plain, "--dataset", "self_cognition#4", *IDENTITY, "--retention_eval_steps", 5,
                   "--output_dir", tmp_path / "out") == 2
    assert "has no built-in probes; give --retention_dataset" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_combined_score_and_the_tracker_it_feeds():
    assert combined_score({"retention": 0.46, "retention_start": 0.92, "identity": 0.75}) == pytest.approx(1.25)
    assert combined_score({"retention": 0.95, "retention_start": 0.92, "identity": 1.0}) == 2.0  # kept share capped
    tracker = BestTracker(by_eval_loss=False)
    for step, score in [(10, 1.2), (20, 1.9), (30, 1.9), (40, 1.1)]:
        tracker.consider(step, score, "identity + retention")
    assert tracker.best_step == 30 and tracker.best_metric == "identity + retention"  # a tie goes to the later step
    tracker.on_evaluate(None, SimpleNamespace(global_step=50), SimpleNamespace(should_training_stop=False),
                        metrics={"eval_loss": 0.1})
    assert tracker.best_step == 30  # the eval loss does not override the combined score


def test_the_end_line_names_a_dip_between_start_and_end():
    from tunewise.train.fit import watch_summary

    history = [{"step": s, "retention": r, "identity": i} for s, r, i in [(0, 0.9, 0.0), (500, 0.74, 0.81),
                                                                           (1000, 0.92, 1.0)]]
    (line,) = watch_summary(SimpleNamespace(history=history, seconds=1.5, stopped=None))
    assert line == ("retention watch: general skill 0.900 at step 0 -> 0.920 at step 1000 (lowest 0.740 at step 500); "
                    "identity 0.000 -> 1.000 (3 probes, 1.5 s)")
    for record, mentions in zip(history, (0.0, 0.9, 1.0)):
        record["identity_mentions"] = mentions
    (line,) = watch_summary(SimpleNamespace(history=history, seconds=1.5, stopped=None))
    assert "identity 0.000 -> 1.000 (mentioned 0.000 -> 1.000) (3 probes" in line
