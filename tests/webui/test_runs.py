"""The Export and Evaluate tabs' commands on a checkpoint the Train tab's job wrote: real `tunewise sft`, `export`
and `eval --compare` subprocesses, their output read back as the tabs read it."""
import json
import re
import shlex
from pathlib import Path

import pytest

from tunewise.webui.commands import eval_argv, export_argv, exported_path, sft_argv
from tunewise.webui.tabs import evaluate, export
from tunewise.webui.tabs.common import checkpoint_choices, follow
from tunewise.webui.training import Job, TrainJob


@pytest.mark.slow
def test_export_and_evaluate_a_checkpoint_trained_from_the_form(tmp_path):
    out = tmp_path / "runs"
    train = TrainJob(tmp_path)
    argv = sft_argv({"dataset": "self_cognition#8", "model_name": "小黄, Xiao Huang", "model_author": "魔搭, ModelScope",
                     "max_steps": 1, "gradient_accumulation_steps": "1", "save_steps": 1, "output_dir": str(out),
                     "report_to": "none"})
    assert train.start("sft", argv).startswith("started")
    assert train.wait(300) == 0, train.log_text()
    assert train.status() == "finished"
    [ckpt, *_] = checkpoint_choices(str(out))

    values = [str(train.run_dir()), "", "auto", False]  # a run directory: its best checkpoint
    job = Job(tmp_path, "export")
    status, log = list(follow(job, "export", export_argv(dict(zip(export.EXPORT_FIELDS, values)))))[-1]
    assert job.command_line == export.preview(*values) and status == "finished", log
    merged = Path(exported_path(log))
    assert merged == Path(str((train.run_dir() / "best").resolve()) + "-merged") and (merged / "config.json").is_file()
    status, log = list(follow(Job(tmp_path, "export"), "export", export_argv(dict(zip(export.EXPORT_FIELDS, values)))))[-1]
    assert status.startswith("failed (exit code 2): tunewise export: error: --output_dir") and "already exists" in status

    report_path = tmp_path / "eval.json"
    values = [ckpt, "tunewise-tiny", "", "", 8, "tiny_skills#4", "", False, str(report_path)]
    job = Job(tmp_path, "eval")
    status, log = list(follow(job, "eval", eval_argv(dict(zip(evaluate.EVAL_FIELDS, values)))))[-1]
    assert status == "finished" and shlex.split(job.command_line) == shlex.split(evaluate.preview(*values)), log
    headers, rows = evaluate.eval_table(json.loads(report_path.read_text(encoding="utf-8")))
    assert headers == ["metric", f"A: {ckpt}", "B: tunewise-tiny", "better"]
    table = {row[0]: row[1:] for row in rows}
    assert all(re.fullmatch(r"\d{1,3}\.\d%", v) for v in table["identity accuracy (names it cleanly)"][:2]), table
    assert "general skill accuracy" in table and table["identity accuracy (names it cleanly)"][2] in ("A", "B", "tie")
    assert "identity accuracy" in log and "summary: A better on" in log  # the text report beside the table
