"""--resume_from_checkpoint: the same LR curve and losses as the run it continues; a finished run is not resumed."""
import pytest

from cli_runs import read_log, run_cli

FLAGS = ["--dataset", "self_cognition#16", "--model_name", "N", "--model_author", "A", "--max_steps", 8,
         "--save_steps", 4, "--logging_steps", 1, "--warmup_steps", 2, "--save_total_limit", 5,
         "--add_version", "false", "--report_to", "none"]


def test_resume_continues_the_same_lr_curve(tmp_path):
    flags = [*FLAGS, "--output_dir", tmp_path]
    assert run_cli("sft", *flags) == 0
    full = [r for r in read_log(tmp_path) if "loss" in r]
    assert [r["step"] for r in full] == list(range(1, 9))

    # Resume from step 4 as if the run had been killed after that checkpoint: steps 5..8 are trained again.
    assert run_cli("sft", *flags, "--resume_from_checkpoint", tmp_path / "checkpoint-4") == 0
    resumed = [r for r in read_log(tmp_path) if "loss" in r]
    assert [r["step"] for r in resumed] == list(range(1, 9))
    assert [r["lr"] for r in resumed] == [r["lr"] for r in full]
    assert [r["planned_lr"] for r in resumed] == [r["planned_lr"] for r in full]
    assert [r["loss"] for r in resumed[4:]] == pytest.approx([r["loss"] for r in full[4:]], rel=1e-4)

    # Resuming the finished run: transformers would take a 9th step, past the plan's end; refused, nothing changed
    before = (tmp_path / "logging.jsonl").read_bytes()
    assert run_cli("sft", *flags, "--resume_from_checkpoint", "latest") == 2
    assert (tmp_path / "logging.jsonl").read_bytes() == before
    assert not (tmp_path / "checkpoint-9").exists()
