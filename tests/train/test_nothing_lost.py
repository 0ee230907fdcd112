"""Nothing lost: no command writes over a run unasked, a NaN or a signal never costs the good checkpoints, a killed
rotation or a torn log line never blocks a resume, and a failed resume changes nothing on disk."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from cli_runs import read_log, run_cli

SMALL = ["--dataset", "self_cognition#16", "--model_name", "N", "--model_author", "A", "--report_to", "none",
         "--logging_steps", 1]


def digest(folder) -> dict:
    """{relative path: md5} of every file under `folder`."""
    return {str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A finished 6-step run with checkpoints 4 and 6 (shared by the tests that only read it or copy it)."""
    out = tmp_path_factory.mktemp("small") / "run"
    assert run_cli("sft", *SMALL, "--max_steps", 6, "--save_steps", 2, "--output_dir", out,
                   "--add_version", "false") == 0
    return out


def copy_run(src, dst):
    import shutil

    shutil.copytree(src, dst, symlinks=True)
    return dst


def test_a_run_never_writes_into_a_folder_that_holds_one(small_run, tmp_path, capsys):
    run = copy_run(small_run, tmp_path / "run")
    before = digest(run)
    assert run_cli("sft", *SMALL, "--max_steps", 2, "--output_dir", run, "--add_version", "false") == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--overwrite true" in err
    assert digest(run) == before
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert run_cli("sft", *SMALL, "--max_steps", 2, "--output_dir", tmp_path / "mine", "--add_version", "false") == 2
    assert "already holds files (notes.txt)" in capsys.readouterr().err
    # asked for in words: the old run is replaced, and the new one reports its own checkpoint
    assert run_cli("sft", *SMALL, "--max_steps", 2, "--save_steps", 2, "--output_dir", run, "--add_version", "false",
                   "--overwrite", "true") == 0
    assert not (run / "checkpoint-4").exists() and (run / "last").resolve().name == "checkpoint-2"
    assert [r["step"] for r in read_log(run) if "loss" in r] == [1, 2]


def test_a_second_run_into_a_locked_folder_is_refused_and_a_dead_runs_lock_is_taken_over(tmp_path, capsys):
    import socket

    out = tmp_path / "run"
    out.mkdir()
    (out / ".tunewise.lock").write_text(f"{socket.gethostname()} {os.getppid()}")  # a live process holds it
    assert run_cli("sft", *SMALL, "--max_steps", 1, "--output_dir", out, "--add_version", "false",
                   "--overwrite", "true") == 2
    assert "is in use by another tunewise run" in capsys.readouterr().err
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / ".tunewise.lock").write_text(f"{socket.gethostname()} {dead.pid}")
    assert run_cli("sft", *SMALL, "--max_steps", 1, "--output_dir", out, "--add_version", "false",
                   "--overwrite", "true") == 0
    assert not (out / ".tunewise.lock").exists()  # released at the end


def test_plan_does_not_overwrite_a_runs_plan(small_run, tmp_path, capsys):
    run = copy_run(small_run, tmp_path / "run")
    before = digest(run)
    assert run_cli("plan", *SMALL, "--max_steps", 9, "--output_dir", run) == 2
    assert "holds a training run" in capsys.readouterr().err and digest(run) == before
    out = tmp_path / "plan"
    assert run_cli("plan", *SMALL, "--max_steps", 9, "--output_dir", out) == 0
    assert run_cli("plan", *SMALL, "--max_steps", 7, "--output_dir", out) == 0  # an earlier plan alone is replaced
    assert json.loads((out / "plan.json").read_text())["steps"]["total_steps"] == 7


def test_export_never_replaces_the_checkpoint_the_run_or_other_files(small_run, tmp_path, capsys):
    run = copy_run(small_run, tmp_path / "run")
    ckpt = run / "checkpoint-4"
    before = digest(run)
    for target, message in ((ckpt, "the checkpoint being exported"), (run, "a folder around it"),
                            (ckpt / "sub", "a folder inside it")):
        assert run_cli("export", "--adapters", ckpt, "--output_dir", target) == 2
        assert message in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    (other / "data.txt").write_text("mine")
    assert run_cli("export", "--adapters", ckpt, "--output_dir", other) == 2
    assert "already exists" in capsys.readouterr().err and (other / "data.txt").read_text() == "mine"
    assert digest(run) == before
    assert run_cli("export", "--adapters", ckpt, "--output_dir", other, "--overwrite", "true") == 0
    assert (other / "config.json").is_file() and not (other / "data.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temporary left beside it


def test_eval_output_is_not_overwritten_unasked(small_run, tmp_path, capsys):
    report = tmp_path / "eval.json"
    report.write_text("old")
    assert run_cli("eval", "--adapters", small_run / "last", "--output", report) == 2
    assert "already exists" in capsys.readouterr().err and report.read_text() == "old"


def test_nan_stops_before_the_update_and_keeps_the_finite_checkpoints(tmp_path, capsys):
    import torch
    from safetensors.torch import load_file

    out = tmp_path / "run"
    code = run_cli("sft", *SMALL, "--learning_rate", 1e3, "--max_steps", 12, "--save_steps", 2,
                   "--save_total_limit", 1, "--output_dir", out, "--add_version", "false")
    err = capsys.readouterr().err
    assert code == 2 and "non-finite gradient norm" in err and "Traceback" not in err
    kept = sorted(p.name for p in out.glob("checkpoint-*"))
    assert kept and f"is kept: {out / kept[-1]}" in err
    for name in kept:
        weights = load_file(out / name / "adapter_model.safetensors")
        assert all(torch.isfinite(t).all() for t in weights.values()), name
    # the log says NaN where it happened, not a filtered 0.0 or average
    assert all(r["loss"] == r["loss"] for r in read_log(out) if "loss" in r)  # the stopped step was never logged


def test_nan_skip_drops_the_update_and_stop_raises(tmp_path):
    """FiniteGuard on a real model: a NaN gradient leaves every weight unchanged under skip."""
    import torch
    from transformers import TrainerControl, TrainerState

    from tunewise.errors import UserError
    from tunewise.train.stops import FiniteGuard

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    model.weight.grad[0, 0] = float("nan")
    before = [p.detach().clone() for p in model.parameters()]
    guard = FiniteGuard("skip")
    guard.on_pre_optimizer_step(None, TrainerState(), TrainerControl(), model=model)
    optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters())) and guard.skipped == 1
    model(torch.ones(1, 3)).sum().backward()
    model.bias.grad[0] = float("inf")
    with pytest.raises(UserError, match="non-finite gradient norm"):
        FiniteGuard("stop").on_pre_optimizer_step(None, TrainerState(), TrainerControl(), model=model)


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_saves_at_the_current_step_and_the_run_resumes(tmp_path, sig, code):
    out = tmp_path / "run"
    flags = [str(f) for f in SMALL] + ["--max_steps", "60", "--save_steps", "1000", "--output_dir", str(out),
                                       "--add_version", "false"]
    proc = subprocess.Popen([sys.executable, "-m", "tunewise.cli", "sft", *flags], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    log = out / "logging.jsonl"
    deadline = time.time() + 120
    while not (log.is_file() and len(log.read_text().splitlines()) >= 3):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    name = signal.Signals(sig).name
    assert f"stopped by {name} at step" in err and "--resume_from_checkpoint latest" in err and "Traceback" not in err
    step = int(err.split(f"stopped by {name} at step ")[1].split(";")[0])
    assert 0 < step < 60 and (out / f"checkpoint-{step}" / "trainer_state.json").is_file()
    assert run_cli("sft", *flags, "--resume_from_checkpoint", "latest") == 0  # the same plan, continued
    assert [r["step"] for r in read_log(out) if "loss" in r] == list(range(1, 61))


def test_a_killed_rotation_a_torn_log_line_and_a_failed_resume(small_run, tmp_path, capsys):
    run = copy_run(small_run, tmp_path / "run")
    # a kill during rotation: the half-deleted folder was renamed first, so it no longer counts as a checkpoint
    (run / "checkpoint-6").rename(run / ".deleting-checkpoint-6-1-1")
    (run / ".deleting-checkpoint-6-1-1" / "trainer_state.json").unlink()
    # a half checkpoint under its own name (no trainer state) with the newest time is not "latest" either
    (run / "checkpoint-8").mkdir()
    (run / "checkpoint-8" / "adapter_model.safetensors").write_bytes(b"")
    from tunewise.models.checkpoint import latest_checkpoint

    assert latest_checkpoint(str(run)).name == "checkpoint-4"
    # a corrupt optimizer state: the resume fails with exit 2 and changes nothing
    (run / "checkpoint-4" / "optimizer.pt").write_bytes(b"not a torch file")
    with (run / "logging.jsonl").open("a") as f:
        f.write('{"step": 5, "loss": 1.2')  # a line cut short by a full disk
    before = digest(run)
    flags = [*SMALL, "--max_steps", 6, "--save_steps", 2, "--output_dir", run, "--add_version", "false"]
    assert run_cli("sft", *flags, "--resume_from_checkpoint", "latest") == 2
    err = capsys.readouterr().err
    assert "cannot load its training state" in err and "the run directory is unchanged" in err
    assert digest(run) == before
    # with a good optimizer state the same resume works, and the torn line is dropped with a note
    (run / "checkpoint-4" / "optimizer.pt").write_bytes((small_run / "checkpoint-4" / "optimizer.pt").read_bytes())
    assert run_cli("sft", *flags, "--resume_from_checkpoint", "latest") == 0
    assert "were not whole JSON" in capsys.readouterr().out
    assert [r["step"] for r in read_log(run) if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert not list(run.glob(".deleting-*"))


def test_the_best_checkpoint_survives_rotation_across_a_resume(tmp_path):
    """Rotation keeps the lowest-eval-loss checkpoint also after a resume: the tracker is saved with each checkpoint
    and read back from the one resumed (a fresh tracker would name no best, and rotation would delete it)."""
    import shutil

    out = tmp_path / "run"
    flags = [*SMALL, "--split_dataset_ratio", 0.25, "--eval_steps", 2, "--save_steps", 2, "--max_steps", 10,
             "--learning_rate", 5e-2, "--warmup_steps", 0, "--output_dir", out, "--add_version", "false"]
    assert run_cli("sft", *flags, "--save_total_limit", 20) == 0
    for step in (6, 8, 10):  # as if killed right after checkpoint-4 was published
        shutil.rmtree(out / f"checkpoint-{step}")
    saved = json.loads((out / "checkpoint-4" / "tunewise_best.json").read_text())
    evals = {r["step"]: r["eval_loss"] for r in read_log(out) if "eval_loss" in r}
    assert saved["best_step"] == min((s for s in evals if s <= 4), key=lambda s: (evals[s], s))
    assert run_cli("sft", *flags, "--save_total_limit", 1, "--resume_from_checkpoint", "latest") == 0
    evals = {r["step"]: r["eval_loss"] for r in read_log(out) if "eval_loss" in r}
    best_step = min(evals, key=lambda s: (evals[s], s))
    assert (out / "best").resolve().name == f"checkpoint-{best_step}" and (out / f"checkpoint-{best_step}").is_dir()
    assert (out / "checkpoint-10").is_dir() and len(list(out.glob("checkpoint-*"))) <= 2


def test_a_restored_tracker_keeps_its_best_through_rotation(tmp_path):
    from tunewise.train import rundir
    from tunewise.train.callbacks import BestTracker

    for step in (2, 4, 6):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    before = BestTracker()
    before.best_step, before.best_value, before.lowest_loss = 2, 0.5, 0.5
    (tmp_path / "checkpoint-4" / BestTracker.STATE_FILE).write_text(json.dumps(before.state_dict()))
    after = BestTracker()
    after.restore(tmp_path / "checkpoint-4")
    assert after.state_dict() == before.state_dict()
    rundir.rotate(tmp_path, 1, tmp_path / f"checkpoint-{after.best_step}")
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-6"]
    assert (tmp_path / "best").resolve().name == "checkpoint-2" and (tmp_path / "last").resolve().name == "checkpoint-6"


KILL_IN = {  # injected into the child process: SIGKILL at an exact point of a save or a rotation
    "rotation": """
import os, shutil, signal
from tunewise.trees import TRASH
rmtree = shutil.rmtree
def half_then_die(path, *a, **k):
    if os.path.basename(path).startswith(TRASH):
        os.unlink(os.path.join(path, "adapter_model.safetensors"))  # half deleted
        os.kill(os.getpid(), signal.SIGKILL)
    return rmtree(path, *a, **k)
shutil.rmtree = half_then_die
""",
    "save": """
import os, signal
from tunewise.train import rundir
publish, calls = rundir.publish, []
def die_on_second(staged, run_dir):
    calls.append(staged)
    if len(calls) == 2:  # the second checkpoint is complete in .staging but not yet published
        os.kill(os.getpid(), signal.SIGKILL)
    return publish(staged, run_dir)
rundir.publish = die_on_second
""",
}


@pytest.mark.slow  # trains a model for more than a few seconds
@pytest.mark.parametrize("where", sorted(KILL_IN))
def test_sigkill_during_a_save_or_a_rotation_then_resume_gives_the_same_weights_and_best(tmp_path, where):
    flags = [str(f) for f in SMALL] + ["--max_steps", "10", "--save_steps", "2", "--save_total_limit", "1",
                                       "--split_dataset_ratio", "0.25", "--eval_steps", "2", "--learning_rate", "5e-2",
                                       "--warmup_steps", "0", "--add_version", "false"]
    reference, run = tmp_path / "reference", tmp_path / "killed"
    code = KILL_IN[where] + "import sys\nfrom tunewise.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    # every run in a process of its own, with the same number of torch threads: the chunked loss's last bits depend
    # on the thread count, and tests before this one (the server's) leave this process at 1 thread
    sft = [sys.executable, "-m", "tunewise.cli", "sft", *flags]
    assert subprocess.run([*sft, "--output_dir", str(reference)], capture_output=True, timeout=300).returncode == 0
    proc = subprocess.run([sys.executable, "-c", code, "sft", *flags, "--output_dir", str(run)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    resumed = subprocess.run([*sft, "--output_dir", str(run), "--resume_from_checkpoint", "latest"],
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    final = {name: digest(folder / "checkpoint-10") for name, folder in (("reference", reference), ("killed", run))}
    weights = {name: d["adapter_model.safetensors"] for name, d in final.items()}
    assert weights["killed"] == weights["reference"]
    assert (run / "best").resolve().name == (reference / "best").resolve().name
    assert not list(run.glob(".deleting-*")) and not (run / ".staging").exists()


def test_a_full_disk_during_a_save_is_one_error_naming_the_checkpoint_kept(tmp_path):
    inject = """
import errno, os
from tunewise.train import rundir
publish, calls = rundir.publish, []
def full(staged, run_dir):
    calls.append(staged)
    if len(calls) == 2:
        raise OSError(errno.ENOSPC, "No space left on device", str(staged))
    return publish(staged, run_dir)
rundir.publish = full
import sys
from tunewise.cli import main
sys.exit(main(sys.argv[1:]))
"""
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", inject, "sft", *map(str, SMALL), "--max_steps", "6", "--save_steps", "2",
                           "--output_dir", str(out), "--add_version", "false"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "No space left on device" in proc.stderr and f"is kept: {out / 'checkpoint-2'}" in proc.stderr
    assert "--resume_from_checkpoint latest" in proc.stderr


def test_eval_warns_on_non_finite_weights(small_run, tmp_path, capsys):
    import torch
    from safetensors.torch import load_file, save_file

    run = copy_run(small_run, tmp_path / "run")
    weights = run / "checkpoint-6" / "adapter_model.safetensors"
    tensors = load_file(weights)
    first = sorted(tensors)[0]
    tensors[first] = torch.full_like(tensors[first], float("nan"))
    save_file(tensors, weights)
    assert run_cli("eval", "--adapters", run / "checkpoint-6", "--dataset", "tiny_skills#4", "--max_new_tokens", 8,
                   "--retention_baseline", "false") == 0
    assert "weight tensors hold NaN or inf" in capsys.readouterr().err


def test_a_signal_to_a_sweep_reaches_its_trial(tmp_path):
    out = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, "-m", "tunewise.cli", "sweep", *map(str, SMALL), "--max_steps", "200",
                             "--learning_rate", "1e-3,1e-4", "--save_steps", "1000", "--output_dir", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    logs = lambda: list(out.glob("trials/*/logging.jsonl"))  # noqa: E731
    while not (logs() and len(logs()[0].read_text().splitlines()) >= 3):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "tunewise sweep: stopped by SIGTERM during trial" in err, err[-2000:]
    trial = logs()[0].parent
    assert any(trial.glob("checkpoint-*")) and (trial / "train.log").is_file()  # the trial saved, then ended
    assert "stopped by SIGTERM" in (trial / "train.log").read_text()
    assert not [p for p in os.popen("ps -eo args").read().splitlines() if str(trial) in p]  # no orphan left
