"""A sweep stops on the first signal its process group gets (`timeout`, systemd, Slurm and a terminal's Ctrl-C signal
the whole group), wherever it is: a trial starting (before the trial has a handler of its own), a trial training, a
trial being evaluated, between two trials. Each case runs the real `tunewise sweep` in a session of its own on the
embedded model, signals its process group with os.killpg at a moment recognised by what the sweep or its trial has
written (never by a guessed sleep), and checks: the documented exit code, promptly; no trial started after the
signal; the finished trial kept in results.csv; a message saying how to continue, with no traceback."""
import csv
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from cli_runs import IDENTITY

FIXED = ["--dataset", "self_cognition#8", *IDENTITY, "--logging_steps", "1", "--save_steps", "100", "--report_to",
         "none", "--eval_general_limit", "4", "--eval_max_new_tokens", "16"]
PROMPTLY = 60  # seconds from the signal to the sweep's exit: a trial stops within one step; evaluation at once
WAIT = 300  # seconds at most for a moment to come (a trial takes 10-30 s on 2 busy cores)


def start_sweep(out, steps: str, tmp_path, name: str):
    """`tunewise sweep` in a new session (its own process group, as a shell job or a batch job has), its output in
    files so that nothing blocks on a full pipe."""
    stdout, stderr = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "tunewise.cli", "sweep", *FIXED, "--max_steps", steps,
                             "--output_dir", str(out)], stdout=stdout.open("w"), stderr=stderr.open("w"),
                            stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    return proc, stdout, stderr


def wait_for(proc, moment, what: str):
    """Poll (every 20 ms) until `moment()` is true; fails if the sweep ends first."""
    deadline = time.monotonic() + WAIT
    while not moment():
        if proc.poll() is not None:
            pytest.fail(f"the sweep ended (exit {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"no {what} within {WAIT} s")
        time.sleep(0.02)


def trial_importing_torch(sweep_pid: int) -> bool:
    """The sweep's trial process (`python -m tunewise.cli sft ...`) has mapped libtorch: it is importing its
    libraries, seconds before it builds its trainer and installs its own handler, and the sweep has long returned
    from starting it."""
    import psutil

    try:
        children = psutil.Process(sweep_pid).children()
    except psutil.NoSuchProcess:
        return False
    for child in children:
        try:
            if "sft" in child.cmdline() and "libtorch" in open(f"/proc/{child.pid}/maps").read():
                return True
        except (psutil.Error, OSError):
            continue
    return False


def signal_and_wait(proc, sig=signal.SIGTERM) -> float:
    os.killpg(proc.pid, sig)
    start = time.monotonic()
    try:
        proc.wait(timeout=PROMPTLY)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"the sweep was still running {PROMPTLY} s after the signal")
    return time.monotonic() - start


def logged_steps(run_dir) -> int:
    path = run_dir / "logging.jsonl"
    if not path.is_file():
        return 0
    return sum('"loss"' in line for line in path.read_text(encoding="utf-8").splitlines())


@pytest.fixture(scope="module")
def one_trial_done(tmp_path_factory):
    """A sweep directory whose first trial (steps1) finished, was evaluated and is in results.csv, and whose
    second was never run: the sweep was killed (SIGKILL) once loss_curves.png, the last of the results written after
    a trial, existed. Each test runs on a copy, so that it starts at the second trial."""
    tmp = tmp_path_factory.mktemp("sweep_signals")
    out = tmp / "sweep"
    proc, _, stderr = start_sweep(out, "1,2", tmp, "first")
    wait_for(proc, lambda: (out / "loss_curves.png").is_file(), "results after the first trial")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (out / "trials" / "steps1" / "trial.json").is_file(), stderr.read_text()
    return out


def copy_of(sweep, tmp_path):
    out = tmp_path / "sweep"
    shutil.copytree(sweep, out, symlinks=True)
    for leftover in ("steps2", ".steps2.train.log"):  # the killed second trial, if it had begun
        path = out / "trials" / leftover
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    return out


def check_stopped(proc, out, stderr, seconds, code, stopped_trial: str | None):
    err = stderr.read_text(encoding="utf-8")
    print(f"signal to exit: {seconds:.2f} s")  # shown with pytest -rP
    assert proc.returncode == code, f"exit {proc.returncode}, stderr:\n{err}"
    assert seconds < PROMPTLY
    assert "Traceback" not in err, err
    assert "run the same command again" in err.lower(), err  # how to continue
    rows = list(csv.DictReader((out / "results.csv").open(encoding="utf-8")))
    assert ("steps1", "ok") in [(r["trial"], r["status"]) for r in rows], rows  # the finished trial is kept
    assert (out / "trials" / "steps1" / "trial.json").is_file() and (out / "trials" / "steps1" / "last").exists()
    names = {p.name for p in (out / "trials").iterdir()}
    assert not {"steps3", ".steps3.train.log"} & names, names  # no trial started after the signal
    if stopped_trial is not None:
        assert not (out / "trials" / stopped_trial / "trial.json").exists()  # not recorded as finished (or failed)
        assert stopped_trial not in [r["trial"] for r in rows]
    return err


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_group_signal_while_a_trial_starts_stops_the_sweep(one_trial_done, tmp_path, sig):
    out = copy_of(one_trial_done, tmp_path)
    proc, _, stderr = start_sweep(out, "1,2,3", tmp_path, "start")
    # the trial is still importing: its own handler (installed once its trainer is built) is seconds away, so the
    # signal ends it with the default action (SIGTERM) or a KeyboardInterrupt (SIGINT); the sweep must stop anyway
    wait_for(proc, lambda: trial_importing_torch(proc.pid), "trial process importing torch")
    seconds = signal_and_wait(proc, sig)
    err = check_stopped(proc, out, stderr, seconds, 128 + sig, "steps2")
    assert f"stopped by {sig.name} during trial steps2" in err, err
    assert f"{sig.name} received: saving" not in (out / "trials" / "steps2" / "train.log").read_text(encoding="utf-8")


@pytest.mark.slow
def test_a_group_signal_during_training_stops_the_sweep(one_trial_done, tmp_path):
    out = copy_of(one_trial_done, tmp_path)
    proc, _, stderr = start_sweep(out, "1,1000,3", tmp_path, "training")
    wait_for(proc, lambda: logged_steps(out / "trials" / "steps1000") >= 1, "logged training step")
    seconds = signal_and_wait(proc)
    err = check_stopped(proc, out, stderr, seconds, 143, "steps1000")
    assert "during trial steps1000" in err, err
    assert logged_steps(out / "trials" / "steps1000") < 1000


@pytest.mark.slow
def test_a_group_signal_during_evaluation_stops_the_sweep(one_trial_done, tmp_path):
    out = copy_of(one_trial_done, tmp_path)
    proc, stdout, stderr = start_sweep(out, "1,2,3", tmp_path, "evaluation")
    # TRIAL/train.log is moved into place when the trial's training process has ended; evaluation comes next
    wait_for(proc, lambda: (out / "trials" / "steps2" / "train.log").is_file(), "end of the trial's training")
    seconds = signal_and_wait(proc)
    err = check_stopped(proc, out, stderr, seconds, 143, "steps2")
    assert "stopped by SIGTERM during trial steps2" in err, err
    assert not (out / "trials" / "steps2" / "eval.json").exists()


@pytest.mark.slow
def test_a_group_signal_between_trials_stops_the_sweep_and_the_same_command_continues(one_trial_done, tmp_path):
    out = copy_of(one_trial_done, tmp_path)
    proc, _, stderr = start_sweep(out, "1,2,3", tmp_path, "between")
    wait_for(proc, lambda: (out / "trials" / "steps2" / "trial.json").is_file(), "second trial's record")
    seconds = signal_and_wait(proc)
    err = check_stopped(proc, out, stderr, seconds, 143, None)
    rows = list(csv.DictReader((out / "results.csv").open(encoding="utf-8")))
    assert [(r["trial"], r["status"]) for r in rows] == [("steps1", "ok"), ("steps2", "ok")], rows
    assert "2 of 3 trials finished" in err and "tunewise sweep --dataset" in err and "--max_steps 1,2,3" in err, err

    # the message's advice: the same command finishes the sweep, skipping the two finished trials
    proc, stdout, stderr = start_sweep(out, "1,2,3", tmp_path, "again")
    assert proc.wait(timeout=WAIT) == 0, stderr.read_text()
    text = stdout.read_text(encoding="utf-8")
    assert "[1/3] steps1" in text and "[2/3] steps2" in text and text.count("skipped, finished earlier") == 2
    rows = list(csv.DictReader((out / "results.csv").open(encoding="utf-8")))
    assert [(r["trial"], r["status"]) for r in rows] == [("steps1", "ok"), ("steps2", "ok"), ("steps3", "ok")]


def test_a_signal_inside_a_callback_that_cannot_raise_still_stops_the_sweep():
    """The evaluation runs in the sweep's own process, and a signal can arrive while Python runs a weakref callback
    or a __del__ (garbage collection during generation), where an exception is printed and dropped: the sweep's
    handler is then run again after that callback, so the evaluation is still abandoned (a real signal, a real
    callback; without the re-delivery the loop below runs to its end)."""
    import weakref

    from tunewise.sweep.signals import StopSignals, SweepInterrupted

    class Thing:
        pass

    signals, inside = StopSignals(), []

    def callback(_):
        if not inside:
            inside.append(True)
            os.kill(os.getpid(), signal.SIGTERM)  # handled here, inside the callback
    signals.install()
    try:
        with pytest.raises(SweepInterrupted):
            for _ in range(10_000_000):  # about 10 s, where the interrupt comes within milliseconds
                thing = Thing()
                ref = weakref.ref(thing, callback)  # noqa: F841
                del thing
    finally:
        signals.uninstall()
    assert inside and signals.received == signal.SIGTERM
