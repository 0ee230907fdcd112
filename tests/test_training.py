import json

import pytest

from cli_runs import run_cli


def test_plan_prints_and_writes_the_plan_without_training(tmp_path, capsys):
    rc = run_cli("plan", "--dataset", "self_cognition", "--model_name", "N", "--model_author", "A",
                 "--num_train_epochs", 3, "--per_device_train_batch_size", 4, "--gradient_accumulation_steps", 2,
                 "--nproc_per_node", 2, "--learning_rate", 2e-4, "--warmup_steps", 1, "--output_dir", tmp_path)
    assert rc == 0
    out = capsys.readouterr().out
    plan = json.loads((tmp_path / "plan.json").read_text())
    # 100 rows, 2 processes x 4 per device -> 13 batches per device -> 7 optimizer steps per epoch (accumulation 2)
    assert plan["steps"]["steps_per_epoch"] == 7 and plan["steps"]["total_steps"] == 21
    assert plan["schedule"]["warmup_steps"] == 1 and plan["schedule"]["learning_rate"] == 2e-4
    assert "21" in out and "cosine" in out
    assert (tmp_path / "lr_plan.png").stat().st_size > 0
    assert len((tmp_path / "lr_plan.csv").read_text().splitlines()) == 1 + 22
    assert not list(tmp_path.glob("v*-*"))  # no run directory, no checkpoint


def test_a_warmup_nobody_asked_for_yields_and_a_given_one_is_labelled_flag(tmp_path, capsys):
    common = ["--dataset", "self_cognition", "--model_name", "N", "--model_author", "A"]
    # the model's own warm-up (0.05) cannot go with 'constant' nor fit a 1-step run: dropped with a note, not refused
    assert run_cli("plan", *common, "--lr_scheduler_type", "constant", "--output_dir", tmp_path / "a") == 0
    out = capsys.readouterr().out
    assert "no warm-up: the model warm-up of 0.05" in out and "constant scheduler has none" in out
    assert run_cli("plan", *common, "--max_steps", 1, "--output_dir", tmp_path / "b") == 0
    assert "would cover the whole run of 1 steps" in capsys.readouterr().out
    # a warm-up the user gave is honoured, so a contradiction is still an error
    assert run_cli("plan", *common, "--lr_scheduler_type", "constant", "--warmup_ratio", 0.1,
                   "--output_dir", tmp_path / "c") == 2
    assert "ignores warmup" in capsys.readouterr().err
    assert run_cli("plan", *common, "--warmup_ratio", 0.1, "--output_dir", tmp_path / "d") == 0
    warmup_row = next(line for line in capsys.readouterr().out.splitlines() if "warmup steps" in line)
    assert warmup_row.split()[-1] == "flag", warmup_row


def test_the_plan_names_the_engine(tmp_path, capsys):
    base = ["--dataset", "self_cognition#20", "--model_name", "N", "--model_author", "A"]
    for extra, engine in (([], "one process"), (["--nproc_per_node", "2"], "DDP (torchrun)"),
                          (["--nproc_per_node", "2", "--nnodes", "2"], "DDP (torchrun) on 2 nodes"),
                          (["--nproc_per_node", "2", "--deepspeed", "zero3"], "DeepSpeed ZeRO-3"),
                          (["--nproc_per_node", "2", "--nnodes", "2", "--deepspeed", "zero2"],
                           "DeepSpeed ZeRO-2 on 2 nodes"),
                          (["--nproc_per_node", "2", "--fsdp", "full_shard auto_wrap"],
                           "FSDP full shard (auto-wrap Qwen2DecoderLayer)")):
        if "--deepspeed" in extra:
            pytest.importorskip("deepspeed")
        out = tmp_path / engine.replace(" ", "_").replace("(", "").replace(")", "")
        assert run_cli("plan", *base, *extra, "--output_dir", out) == 0
        lines = capsys.readouterr().out.splitlines()
        line = next(line for line in lines if line.strip().startswith("engine"))
        assert line.split(None, 1)[1].strip() == engine
        assert json.loads((out / "plan.json").read_text())["extra"]["engine"] == engine
        world = (2 if extra else 1) * (2 if "--nnodes" in extra else 1)
        rows = {name: next(line.split()[2] for line in lines if line.strip().startswith(name))
                for name in ("world size", "global batch")}
        assert rows == {"world size": str(world), "global batch": str(world)}  # batch 1 per device, no accumulation


def test_the_plan_shows_the_devices_choices_and_records_them(tmp_path, capsys):
    """On this CPU: float32 (auto), per-row SDPA for packed rows, 64 MiB recomputed loss chunks; plan.json keeps
    them with the memory estimate. The GPU's choices are tested from a Device description (tests/models)."""
    base = ["--dataset", "self_cognition#20", "--model_name", "N", "--model_author", "A"]
    assert run_cli("plan", *base, "--output_dir", tmp_path / "a") == 0
    out = capsys.readouterr().out
    assert "device: CPU" in out and "dtype      float32  (auto on a CPU)" in out
    extra = json.loads((tmp_path / "a" / "plan.json").read_text())["extra"]
    assert extra["device"]["dtype"] == "float32" and extra["device"]["attention"] == "rows"
    assert extra["device"]["loss"] == "chunks" and extra["memory"]["total"] > 0
    args = json.loads(json.dumps(extra))  # plain JSON
    assert args["device"]["why"]["dtype"] == "auto on a CPU"


def test_gradient_checkpointing_is_turned_on_when_the_estimate_does_not_fit(tmp_path, capsys):
    """--gpu_memory stands for the GPU's memory: the estimate without checkpointing (1.06 GiB at batch 8) does not
    fit 1.05 GiB, with it (1.04 GiB) it does; a given --gradient_checkpointing false is left as given."""
    base = ["--dataset", "self_cognition#20", "--model_name", "N", "--model_author", "A",
            "--per_device_train_batch_size", 8, "--gpu_memory", "1.05GiB"]
    assert run_cli("plan", *base, "--output_dir", tmp_path / "a") == 0
    out = capsys.readouterr().out
    assert "note: --gradient_checkpointing true: the memory estimate without it" in out
    assert "gradient checkpointing, 6.9 MiB with it (on)" in out and "fits in 1.05 GiB" in out
    assert run_cli("plan", *base, "--gradient_checkpointing", "false", "--output_dir", tmp_path / "b") == 0
    out = capsys.readouterr().out
    assert "does NOT fit" in out and "(off)" in out and "--gradient_checkpointing true:" not in out
