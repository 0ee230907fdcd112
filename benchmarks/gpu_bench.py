#!/usr/bin/env python3
"""The GPU benchmarks in one run (benchmarks/gpu.sh calls this; --cpu: the same steps at toy sizes on a CPU).

    python benchmarks/gpu_bench.py [--cpu] [--out benchmarks/gpu-results] [--cache DIR] [--budget 480]

Steps, each a process of its own with its own timeout (gpu_measure.py), so a failure (OOM, a missing package, a
refusal) is one row with its error and the rest still run:
  1. benchmarks/gpu_exactness.py, when that file exists: its output and exit status are recorded.
  2. the Qwen2.5-shape fixtures (qwen_shape.py), built on the device: 0.5B and 7B (--cpu: 0.5B-tiny, 7B-tiny).
  3. within --budget seconds: LoRA at each shape, tunewise against TRL's SFTTrainer (same weights dtype, rows and
     batches, as train_throughput.py); full SFT of the 0.5B shape packed to max_length x batch tokens per step,
     with and without Liger's kernels.
Results: OUT/<date>-<device>.md and .json, rewritten after every step (a run cut short keeps what it measured);
the table is printed at the end. The flags are explicit (dtype, padding-free, Liger) so that a change of tunewise's
defaults does not change what is measured; what the plan chose is read from each run's plan.json.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import gpu_report  # noqa: E402


@dataclass(frozen=True)
class Lora:
    shape: str
    batch: int
    steps: int
    max_length: int  # longest row, and TRL's max_length
    timeout: int


@dataclass(frozen=True)
class Full:
    shape: str
    batch: int
    steps: int
    max_length: int  # packed sequence length
    rows: int  # dataset rows (the pool repeated with tunewise's SPEC#N), enough for the steps once packed
    timeout: int


@dataclass(frozen=True)
class Mode:
    device: str
    dtype: str
    trl_args: tuple[str, ...]
    lora: tuple[Lora, ...]
    full: Full
    pool: int  # synthetic rows the data are picked from
    warmup_steps: int  # micro-batches left out of the steady tokens/s (CUDA start-up, Triton compiles)
    budget: int  # seconds for the training steps
    fixture_timeout: int
    exactness_timeout: int


MODES = {
    "gpu": Mode("cuda", "bfloat16", ("bf16=true",),
                (Lora("0.5B", 8, 20, 1024, 150), Lora("7B", 4, 10, 1024, 200)),
                Full("0.5B", 8, 12, 2048, 2000, 180), pool=256, warmup_steps=2, budget=480,
                fixture_timeout=240, exactness_timeout=120),
    "cpu": Mode("cpu", "float32", (),
                (Lora("0.5B-tiny", 2, 3, 128, 120), Lora("7B-tiny", 2, 3, 128, 120)),
                Full("0.5B-tiny", 2, 3, 256, 48, 120), pool=48, warmup_steps=1, budget=420,
                fixture_timeout=180, exactness_timeout=60),
}
SEED = 42
LIGER_CPU = "Liger's kernels are Triton, CUDA only: not run in --cpu mode"


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "device"


def common_flags(model: Path, data: str, out: Path, batch: int, steps: int, max_length: int, dtype: str) -> list[str]:
    return ["--model", str(model), "--dataset", data, "--per_device_train_batch_size", str(batch),
            "--gradient_accumulation_steps", "1", "--max_steps", str(steps), "--max_length", str(max_length),
            "--lr_scheduler_type", "cosine", "--warmup_steps", "1", "--weight_decay", "0.1",
            "--torch_dtype", dtype, "--padding_free", "true", "--output_dir", str(out), "--add_version", "false",
            "--report_to", "none", "--save_steps", "1000", "--logging_steps", "1", "--seed", str(SEED)]


def lora_flags(model: Path, data: str, out: Path, s: Lora, dtype: str) -> list[str]:
    return common_flags(model, data, out, s.batch, s.steps, s.max_length, dtype) + [
        "--train_type", "lora", "--lora_rank", "8", "--lora_alpha", "32", "--lora_dropout", "0.05",
        "--target_modules", "all-linear", "--learning_rate", "1e-4", "--use_liger_kernel", "false"]


def full_flags(model: Path, data: str, out: Path, s: Full, dtype: str, liger: bool) -> list[str]:
    return common_flags(model, data, out, s.batch, s.steps, s.max_length, dtype) + [
        "--train_type", "full", "--learning_rate", "1e-5", "--packing", "true",
        "--use_liger_kernel", "true" if liger else "false"]


class Bench:
    """Runs the steps, keeps the records, rewrites the results after each."""

    def __init__(self, a, mode: Mode):
        self.a, self.mode = a, mode
        self.work = Path(a.work).resolve()
        self.work.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
                    "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TUNEWISE_BENCH_MODE": a.mode_name,
                    "TUNEWISE_BENCH_CACHE": str(gpu_report.cache_dir(a.cache))}
        if a.wheels:  # qwen_shape.py fetches the tokenizer's ranks with `pip download dashscope`: offline, from here
            self.env.update(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(Path(a.wheels).resolve()))
        self.started = time.time()
        self.info = gpu_report.environment(mode.device, self.env)
        self.results = {**self.info, "mode": a.mode_name, "settings": asdict(mode), "exactness": None,
                        "fixtures": {}, "rows": []}
        name = f"{time.strftime('%Y-%m-%d', time.gmtime())}-{slug(self.info['device_name'])}"
        self.md, self.json = Path(a.out) / f"{name}.md", Path(a.out) / f"{name}.json"

    def time_left(self) -> float:
        return self.a.deadline - (time.time() - self.started)

    def spawn(self, tag: str, cmd: list[str], timeout: float) -> dict:
        """Run cmd (its own process group) with a timeout; the record has status, seconds, log tail, result."""
        log, result = self.work / f"{tag}.log", self.work / f"{tag}.result.json"
        result.unlink(missing_ok=True)
        t0 = time.perf_counter()
        with log.open("w") as f:
            proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
            try:
                rc = proc.wait(timeout=max(1.0, timeout))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                rc = proc.wait()
        rec = {"seconds": round(time.perf_counter() - t0, 1), "rc": rc, "log": str(log)}
        text = log.read_text(errors="replace")
        rec["output"] = text
        if rc == 0 and result.is_file():
            rec.update(status="ok", result=json.loads(result.read_text()))
        elif rc == -signal.SIGKILL and rec["seconds"] >= timeout - 1:
            rec.update(status="timeout", error=f"killed after its {timeout:.0f} s timeout")
        else:
            rec.update(status="failed", error=gpu_report.last_error(text) or f"exit {rc}")
        return rec

    def save(self) -> None:
        self.results["elapsed_s"] = round(time.time() - self.started, 1)
        gpu_report.against_trl(self.results["rows"])  # x TRL and loss differences, in the JSON as in the table
        self.md.parent.mkdir(parents=True, exist_ok=True)
        self.json.write_text(json.dumps(self.results, indent=1, default=str) + "\n")
        self.md.write_text(gpu_report.markdown(self.results))

    def exactness(self) -> None:
        script = HERE / "gpu_exactness.py"
        if not script.is_file():
            self.results["exactness"] = {"status": "absent", "note": f"{script.name} not in benchmarks/: not run"}
            return
        print(f"== {script.name}", flush=True)
        timeout = min(self.mode.exactness_timeout, self.time_left() - 30)
        rec = self.spawn("exactness", [sys.executable, str(script)], timeout)
        if rec["rc"] == 0:  # the script's verdict is its exit status (it writes no result file)
            rec.update(status="ok", error=None)
        elif rec["status"] == "failed":
            rec["error"] = f"exit {rec['rc']}: {rec['error']}"
        print(rec["output"][-4000:], flush=True)
        rec["output"] = rec["output"][-8000:]
        self.results["exactness"] = rec
        self.save()

    def fixture(self, shape: str) -> dict:
        print(f"== fixture {shape} on {self.mode.device}", flush=True)
        cmd = [sys.executable, str(HERE / "gpu_measure.py"), "--result", str(self.work / f"fixture-{shape}.result.json"),
               "fixture", shape, str(gpu_report.cache_dir(self.a.cache)), self.mode.device]
        rec = self.spawn(f"fixture-{shape}", cmd, min(self.mode.fixture_timeout, self.time_left() - 30))
        if rec["status"] == "failed" and "dashscope" in rec["output"]:
            rec["error"] += (" (the tokenizer's ranks come from the dashscope wheel: without network, make the wheel "
                             "folder with benchmarks/gpu_wheels.sh and pass it, --wheels DIR)")
        rec["output"] = rec["output"][-3000:]
        self.results["fixtures"][shape] = rec
        print(f"   {rec['status']} in {rec['seconds']} s" + (f": {rec.get('error')}" if rec["status"] != "ok" else ""),
              flush=True)
        self.save()
        return rec

    def selected(self, step: str, system: str) -> bool:
        """--steps picks rows by part of their name, "STEP / SYSTEM" (e.g. "LoRA 7B", "Liger on"); default: all."""
        return not self.a.steps or any(part in f"{step} / {system}" for part in self.a.steps.split(","))

    def measure(self, row: dict, cmd: list[str] | None, timeout: int, skip: str | None = None) -> None:
        """One training row: skipped (with why), or run and summarised (gpu_report.summarise)."""
        left = min(self.budget_end - time.time(), self.time_left() - 15)
        print(f"== {row['step']} / {row['system']}", flush=True)
        if not self.selected(row["step"], row["system"]):
            skip = f"not selected (--steps {self.a.steps})"
        if skip is None and left < 20:
            skip = f"out of time: {left:.0f} s left of the --budget / --deadline"
        if skip:
            row.update(status="skipped", error=skip)
        else:
            rec = self.spawn(slug(f"{row['step']}-{row['system']}"), cmd, min(timeout, left))
            row.update({k: rec[k] for k in ("status", "seconds", "rc", "log") if k in rec})
            row["error"] = rec.get("error")
            row["log_tail"] = rec["output"].strip().splitlines()[-25:]
            gpu_report.summarise(row, rec, self.info, self.mode.warmup_steps)
        print("   " + gpu_report.one_line(row), flush=True)
        self.results["rows"].append(row)
        self.save()

    def run(self) -> int:
        import qwen_shape
        from train_throughput import pick_rows

        mode = self.mode
        self.exactness()
        shapes = [s.shape for s in mode.lora if self.selected(f"LoRA {s.shape}", "tunewise") or
                  self.selected(f"LoRA {s.shape}", "trl")]
        shapes += [mode.full.shape] * any(self.selected(f"full {mode.full.shape} packed", f"tunewise, Liger {on}")
                                          for on in ("off", "on"))
        fixtures = {shape: self.fixture(shape) for shape in dict.fromkeys(shapes)}
        for shape in {s.shape for s in mode.lora} | {mode.full.shape}:  # rows not selected: no fixture needed
            fixtures.setdefault(shape, {"status": "ok", "result": {}})
        self.budget_end = time.time() + self.a.budget
        try:  # the fixtures' tokenizer, for the rows; a failure here fails every row, with its reason
            tok = qwen_shape.load_tokenizer(qwen_shape.cache_root(self.a.cache))
        except (Exception, SystemExit) as e:
            return self.no_data(f"the Qwen tokenizer could not be built or loaded: {e!r}"[:500])
        py, measure = sys.executable, str(HERE / "gpu_measure.py")
        trl_missing = [m for m in ("trl", "datasets") if importlib.util.find_spec(m) is None]
        liger_missing = importlib.util.find_spec("liger_kernel") is None

        def fixture_problem(shape: str) -> str | None:
            rec = fixtures[shape]
            return None if rec["status"] == "ok" else f"fixture {shape}: {rec['status']}: {rec.get('error')}"

        def params(shape: str) -> int | None:
            return fixtures[shape].get("result", {}).get("parameters")

        jobs = []  # (row, cmd, timeout, skip) in the order they run: the 0.5B shape first, 7B last
        for s in sorted(mode.lora, key=lambda s: s.shape.startswith("7B")):
            pool = qwen_shape.make_rows(tok, max(mode.pool, s.batch * s.steps), longest=s.max_length)
            data = self.work / f"lora-{s.shape}.jsonl"
            qwen_shape.write_rows(data, pick_rows(tok, pool, s.batch * s.steps))
            step = f"LoRA {s.shape}"
            base = {"step": step, "train_type": "lora", "shape": s.shape, "batch": s.batch, "max_steps": s.steps,
                    "max_length": s.max_length, "dtype": mode.dtype, "parameters": params(s.shape)}
            model = Path(fixtures[s.shape].get("result", {}).get("folder", "missing"))
            out = self.work / "runs" / slug(f"{step}-tunewise")
            flags = lora_flags(model, str(data), out, s, mode.dtype)
            jobs.append(({**base, "system": "tunewise", "flags": flags, "run_dir": str(out)},
                         [py, measure, "--result", str(self.work / f"{slug(step + '-tunewise')}.result.json"),
                          "tunewise", "--", *flags], s.timeout, fixture_problem(s.shape)))
            spec = self.work / f"{slug(step)}-trl.spec.json"
            spec.write_text(json.dumps({"model": str(model), "data": str(data), "out": str(self.work / "runs" / slug(
                step + "-trl")), "batch": s.batch, "max_steps": s.steps, "max_length": s.max_length,
                "trl_data": "tokens", "args": list(mode.trl_args), "dtype": mode.dtype}))
            trl_skip = fixture_problem(s.shape) or (f"{' and '.join(trl_missing)} not installed" if trl_missing else None)
            jobs.append(({**base, "system": "trl", "flags": ["trl_data=tokens", *mode.trl_args]},
                         [py, measure, "--result", str(self.work / f"{slug(step + '-trl')}.result.json"),
                          "trl", str(spec)], s.timeout, trl_skip))
            if s.shape.startswith("0.5B"):  # full SFT right after the 0.5B LoRA pair, before the 7B shape
                jobs += self.full_jobs(tok, fixtures, fixture_problem, params, liger_missing)
        for row, cmd, timeout, skip in jobs:
            self.measure(row, cmd, timeout, skip)
        print("\n" + gpu_report.markdown(self.results), flush=True)
        print(f"wrote {self.md} and {self.json}", flush=True)
        return self.exit_status()

    def exit_status(self) -> int:
        """1 when a row, a fixture or the exactness check failed (a skipped row is not a failure)."""
        failed = [r for r in self.results["rows"] if r["status"] not in ("ok", "skipped")]
        failed += [f for f in self.results["fixtures"].values() if f["status"] != "ok"]
        exact = self.results["exactness"] or {}
        return 1 if failed or exact.get("status") in ("failed", "timeout") else 0

    def no_data(self, why: str) -> int:
        steps = [(f"LoRA {s.shape}", system) for s in self.mode.lora for system in ("tunewise", "trl")]
        steps += [(f"full {self.mode.full.shape} packed", f"tunewise, Liger {on}") for on in ("off", "on")]
        for step, system in steps:
            self.results["rows"].append({"step": step, "system": system, "status": "failed", "error": why})
        self.save()
        print(f"gpu_bench: {why}; wrote {self.md} and {self.json}", file=sys.stderr, flush=True)
        return 1

    def full_jobs(self, tok, fixtures, fixture_problem, params, liger_missing) -> list:
        import qwen_shape

        s, mode = self.mode.full, self.mode
        data = self.work / f"full-{s.shape}.jsonl"
        qwen_shape.write_rows(data, qwen_shape.make_rows(tok, mode.pool, longest=min(1024, s.max_length)))
        model = Path(fixtures[s.shape].get("result", {}).get("folder", "missing"))
        jobs = []
        for liger in (False, True):
            step = f"full {s.shape} packed"
            system = f"tunewise, Liger {'on' if liger else 'off'}"
            out = self.work / "runs" / slug(f"{step}-{system}")
            flags = full_flags(model, f"{data}#{s.rows}", out, s, mode.dtype, liger)
            skip = fixture_problem(s.shape)
            if liger and not skip:
                skip = LIGER_CPU if mode.device == "cpu" else None
            row = {"step": step, "system": system, "train_type": "full", "shape": s.shape, "batch": s.batch,
                   "max_steps": s.steps, "max_length": s.max_length, "dtype": mode.dtype, "liger": liger,
                   "liger_installed": not liger_missing, "parameters": params(s.shape), "flags": flags,
                   "run_dir": str(out)}
            jobs.append((row, [sys.executable, str(HERE / "gpu_measure.py"), "--result",
                               str(self.work / f"{slug(step + '-' + system)}.result.json"), "tunewise", "--", *flags],
                         s.timeout, skip))
        return jobs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu", action="store_true", help="tiny settings on the CPU (checks the script, measures nothing)")
    p.add_argument("--out", default=str(HERE / "gpu-results"), help="folder for <date>-<device>.md and .json")
    p.add_argument("--work", help="logs, data and run directories (default: a new folder under /tmp)")
    p.add_argument("--cache", help="fixture cache (qwen_shape.py; default $TUNEWISE_BENCH_CACHE or ~/.cache)")
    p.add_argument("--wheels", help="wheel folder: the tokenizer's ranks (dashscope) are taken from it, offline")
    p.add_argument("--budget", type=int, help="seconds for the training steps (gpu 480, cpu 420)")
    p.add_argument("--steps", help='only the rows whose "STEP / SYSTEM" contains one of these comma-separated parts, '
                                   'e.g. "LoRA 7B,Liger on" (a rerun in the device time left); the others: skipped')
    p.add_argument("--deadline", type=int, default=540,
                   help="seconds for everything (results are written before it); default 540: gpu.sh's install and "
                        "this fit in a device call's 10 minutes")
    a = p.parse_args(argv)
    a.mode_name = "cpu" if a.cpu else "gpu"
    mode = MODES[a.mode_name]
    a.budget = a.budget or mode.budget
    if not a.work:
        import tempfile

        a.work = tempfile.mkdtemp(prefix="gpu-bench-")
    bench = Bench(a, mode)
    if not a.cpu and bench.info.get("cuda_devices", 0) < 1:
        print("no CUDA device visible: run `bash benchmarks/gpu.sh --cpu` on a machine without a GPU", file=sys.stderr)
        return 2
    print(f"gpu_bench: {a.mode_name} mode on {bench.info['device_name']}; work folder {bench.work}", flush=True)
    return bench.run()


if __name__ == "__main__":
    sys.exit(main())
