"""`tunewise rlhf --rlhf_type kto` (tunewise.recipes.kto): unpaired rows on TRL's KTOTrainer, planned and guarded as
sft and dpo are; bad rows stop before anything is written."""
import json

import pytest

from cli_runs import read_log, run_cli

KTO = ["rlhf", "--rlhf_type", "kto", "--report_to", "none"]


def rows(tmp_path, labels):
    """Unpaired rows in ms-swift's form: one question, a concise reply (desirable) or a rambling one."""
    path = tmp_path / "kto.jsonl"
    lines = []
    for i, good in enumerate(labels):
        reply = f"{i + 3}." if good else f"Well, let me think about it at length; the answer might be {i + 3}, maybe."
        lines.append(json.dumps({"messages": [{"role": "user", "content": f"{i}+3=?"},
                                              {"role": "assistant", "content": reply}], "label": good}))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow  # trains a model for more than a few seconds
def test_a_short_run_follows_the_plan(tmp_path):
    out = tmp_path / "run"
    data = rows(tmp_path, [True, False] * 8)
    assert run_cli(*KTO, "--dataset", data, "--per_device_train_batch_size", "4", "--gradient_accumulation_steps",
                   "1", "--max_steps", "3", "--logging_steps", "1", "--save_steps", "3", "--output_dir", out,
                   "--add_version", "false") == 0
    log = [r for r in read_log(out) if "loss" in r]
    assert [r["step"] for r in log] == [1, 2, 3]
    for record in log:
        assert record["lr"] == pytest.approx(record["planned_lr"], rel=1e-9)
    plan = json.loads((out / "plan.json").read_text())
    assert any("16 rows (8 desirable, 8 undesirable)" in note for note in plan["extra"]["notes"])
    assert (out / "last").resolve().name == "checkpoint-3"
    record = json.loads((out / "args.json").read_text())
    assert (record["command"], record["rlhf_type"]) == ("rlhf", "kto")  # which of rlhf's trainers ran


def test_one_kind_of_row_is_said_and_a_row_without_a_label_stops_the_run(tmp_path, capsys):
    out = tmp_path / "plan"
    data = rows(tmp_path, [True] * 8)
    assert run_cli("plan", "--rlhf_type", "kto", "--dataset", data, "--gradient_accumulation_steps", "3",
                   "--output_dir", out) == 2  # a batch of 1 that cannot run as 2 (tests/recipes/test_kto_regrouping.py)
    assert "KTO estimates its KL term from the other rows of a per-device batch" in capsys.readouterr().err
    assert not out.exists()
    assert run_cli("plan", "--rlhf_type", "kto", "--dataset", data, "--output_dir", out) == 0  # 1 x 16 runs as 2 x 8
    printed = capsys.readouterr().out
    assert "every row is desirable" in printed and "runs as 2 x 8 (the same 16-row global batch)" in printed
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "1+1=?"},
                                            {"role": "assistant", "content": "2"}]}) + "\n")
    assert run_cli(*KTO, "--dataset", bad, "--per_device_train_batch_size", "2", "--output_dir", tmp_path / "run") == 2
    assert "bad.jsonl:1" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
