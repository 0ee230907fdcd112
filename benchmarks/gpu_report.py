"""gpu_bench.py's measurements into numbers and a markdown report: environment, tokens/s, MFU, memory against the
plan's estimate, losses against TRL's."""
from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

# Dense bf16 peak (no sparsity) by device name, FLOP/s: NVIDIA's data sheets. Longest pattern first.
PEAK_BF16 = [("H100 PCIe", 756e12), ("H200", 989e12), ("H100", 989e12), ("A100", 312e12)]
PACKAGES = ("torch", "transformers", "peft", "trl", "liger-kernel", "datasets", "accelerate", "tokenizers", "triton",
            "huggingface_hub", "pyarrow", "pandas", "matplotlib")
PLAN_KEYS = {"steps", "schedule", "key_points", "trainer_kwargs", "lr_mapping"}  # plan.json's fixed part
GiB = 2**30
UNITS = {"GiB": 1.0, "MiB": 1 / 1024}


def cache_dir(override: str | None) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import qwen_shape

    return qwen_shape.cache_root(override)


def peak_flops(device_name: str) -> float | None:
    return next((flops for pattern, flops in PEAK_BF16 if pattern in device_name), None)


def version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def git_commit() -> str:
    """$TUNEWISE_COMMIT (the device's copy of the tree has no .git), else git's HEAD (+ '-dirty'), else 'unknown'."""
    if os.environ.get("TUNEWISE_COMMIT"):
        return os.environ["TUNEWISE_COMMIT"]
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


PROBE = """import json, torch
d = {"torch": torch.__version__, "cuda": torch.version.cuda, "cuda_devices": torch.cuda.device_count()}
if d["cuda_devices"]:
    p = torch.cuda.get_device_properties(0)
    d.update(device_name=p.name, device_memory_gib=p.total_memory / 2**30, bf16=torch.cuda.is_bf16_supported())
print(json.dumps(d))"""


def cpu_name() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        model = re.search(r"model name\s*:\s*(.+)", text)
        return f"{len(os.sched_getaffinity(0))} CPU cores ({model.group(1).strip() if model else platform.machine()})"
    except OSError:
        return f"{os.cpu_count()} CPU cores ({platform.machine()})"


def environment(device: str, env: dict) -> dict:
    """Device and versions, asked of a child process (the parent never opens a CUDA context)."""
    probe = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env)
    torch_info = json.loads(probe.stdout) if probe.returncode == 0 else {"probe_error": probe.stderr[-2000:]}
    name = torch_info.get("device_name") if device == "cuda" else None
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": device,
            "device_name": name or (cpu_name() if device == "cpu" else "no CUDA device"),
            "peak_bf16_flops": peak_flops(name) if name else None, **torch_info,
            "python": platform.python_version(), "versions": {p: version(p) for p in PACKAGES},
            "tunewise_commit": git_commit()}


def last_error(text: str) -> str | None:
    """The line that says what went wrong: the last exception or error line, else the last line."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if re.match(r"^([\w.]+(Error|Exception|Exit)\b|error\b|Error\b|RuntimeError|torch\.OutOfMemoryError)", line):
            return line[:500]
    return lines[-1][:500] if lines else None


def read_plan(run_dir: str | None) -> dict:
    path = Path(run_dir) / "plan.json" if run_dir else None
    return json.loads(path.read_text()) if path and path.is_file() else {}


def plan_estimate(run_dir: str | None, log: str) -> tuple[float | None, dict]:
    """The plan's memory estimate in GiB, and what plan.json records beyond its fixed part (the plan's choices).
    plan.json at this commit has no memory figure (it is printed: "memory estimate: 3.28 GiB per device"); a
    later plan.json may: any "memory"/"memory_estimate" entry with a byte "total" (or a number) is taken first."""
    plan = read_plan(run_dir)
    choices = {k: v for k, v in plan.items() if k not in PLAN_KEYS}
    for holder in (plan, plan.get("extra") or {}):
        for key in ("memory", "memory_estimate"):
            value = holder.get(key) if isinstance(holder, dict) else None
            total = value.get("total") if isinstance(value, dict) else value
            if isinstance(total, (int, float)) and total > 0:
                return total / GiB, choices
    found = re.search(r"memory estimate: ([\d.]+) (GiB|MiB) per device", log)
    return (float(found.group(1)) * UNITS[found.group(2)] if found else None), choices


def summarise(row: dict, rec: dict, info: dict, warmup: int) -> None:
    """Fill a row from a step's record: tokens/s (steady: after `warmup` micro-batches), losses, memory, MFU."""
    row["memory_estimate_gib"], row["plan"] = plan_estimate(row.get("run_dir"), rec.get("output", ""))
    row["plan_json"] = read_plan(row.get("run_dir"))  # as written, whatever keys this commit's plan has
    result = rec.get("result")
    if not result:
        return
    steps = result["steps"]
    skip = min(warmup, len(steps) - 1)
    steady_s = result["end"] - steps[skip]["t"]
    tokens = [s["tokens"] for s in steps]
    losses = [h["loss"] for h in result.get("log_history", []) if "loss" in h]
    row.update(micro_batches=len(steps), tokens=sum(tokens), labels=sum(s["labels"] for s in steps),
               per_step_tokens=tokens, shapes=[s["shape"] for s in steps], warmup_micro_batches=skip,
               loop_s=round(result["end"] - result["start"], 3), steady_s=round(steady_s, 3),
               tok_s=sum(tokens[skip:]) / steady_s, tok_s_loop=sum(tokens) / (result["end"] - result["start"]),
               first_loss=losses[0] if losses else None, final_loss=losses[-1] if losses else None,
               threads=result.get("threads"),
               **{k: result.get(k) for k in ("peak_reserved_gib", "peak_allocated_gib", "peak_rss_gib")})
    peak = row["peak_reserved_gib"] or row["peak_rss_gib"]
    if row["memory_estimate_gib"] and peak:
        row["estimate_over_peak"] = row["memory_estimate_gib"] / peak
    if row["train_type"] == "full" and row.get("parameters"):
        flops = 6 * row["parameters"] * row["tok_s"]
        row["model_tflops"] = flops / 1e12
        row["mfu"] = flops / info["peak_bf16_flops"] if info.get("peak_bf16_flops") else None


def one_line(row: dict) -> str:
    if row["status"] != "ok":
        return f"{row['status']}: {row.get('error')}"
    return (f"ok in {row['seconds']} s: {row['tok_s']:,.0f} non-pad tok/s, loss {fmt(row['first_loss'], '.4f')} -> "
            f"{fmt(row['final_loss'], '.4f')}, peak {peak_cell(row)}, plan estimate {fmt(row['memory_estimate_gib'])} GiB")


def fmt(value, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def peak_cell(row: dict) -> str:
    if row.get("peak_reserved_gib") is not None:
        return f"{row['peak_reserved_gib']:.2f} / {row['peak_allocated_gib']:.2f} GiB"
    return f"RSS {fmt(row.get('peak_rss_gib'))} GiB"


def against_trl(rows: list[dict]) -> None:
    """tokens/s and final-loss difference of each tunewise row against TRL's row of the same step."""
    trl = {r["step"]: r for r in rows if r["system"] == "trl" and r["status"] == "ok"}
    for r in rows:
        ref = trl.get(r["step"])
        if r["system"] == "trl" or r["status"] != "ok" or not ref:
            continue
        r["tok_s_over_trl"] = r["tok_s"] / ref["tok_s"]
        if r.get("final_loss") is not None and ref.get("final_loss"):
            r["first_loss_vs_trl_pct"] = 100 * (r["first_loss"] / ref["first_loss"] - 1)
            r["final_loss_vs_trl_pct"] = 100 * (r["final_loss"] / ref["final_loss"] - 1)


def markdown(res: dict) -> str:
    v = res["versions"]
    peak = res.get("peak_bf16_flops")
    device = res["device_name"] + (f", {res['device_memory_gib']:.0f} GiB" if res.get("device_memory_gib") else "")
    out = [f"## benchmarks/gpu.sh{' --cpu' if res['mode'] == 'cpu' else ''}: {device}, {res['date']}", "",
           f"- torch {v['torch']} (CUDA {res.get('cuda')}), transformers {v['transformers']}, peft {v['peft']}, "
           f"trl {v['trl']}, liger-kernel {v['liger-kernel']}, datasets {v['datasets']}, accelerate "
           f"{v['accelerate']}; python {res['python']}; tunewise {res['tunewise_commit']}; "
           f"{res.get('elapsed_s', 0):.0f} s in all",
           f"- MFU peak: {f'{peak / 1e12:.0f} TFLOP/s dense bf16' if peak else 'unknown peak'}; "
           "MFU = 6 x parameters x non-pad tokens/s / peak (full fine-tuning rows only)",
           "- tok/s: non-pad tokens per second of the training loop after the first warm-up micro-batch(es), "
           "CUDA-synchronized; memory: this process's torch.cuda max_memory_reserved / max_memory_allocated "
           "(RSS without CUDA); estimate: `tunewise plan`'s memory estimate for the run", ""]
    ex = res.get("exactness") or {}
    out.append(f"### gpu_exactness.py: {ex.get('status', 'not run')}"
               + (f" ({ex['seconds']} s)" if "seconds" in ex else "") + (f": {ex['error']}" if ex.get("error") else "")
               + (f" {ex['note']}" if ex.get("note") else ""))
    if ex.get("output"):
        out += ["", "```", ex["output"].strip()[-3000:], "```"]
    out += ["", "### Fixtures (qwen_shape.py, built on the device)", "", "| shape | status | seconds | parameters | dtype |",
            "|---|---|---|---|---|"]
    for shape, f in res["fixtures"].items():
        r = f.get("result", {})
        status = "ok" + (" (cached)" if r.get("cached") else "") if f["status"] == "ok" else \
            f"{f['status']}: {f.get('error')}"
        out.append(f"| {shape} | {status} | "
                   f"{f['seconds']} | {fmt(r.get('parameters'), ',')} | {r.get('dtype', '-')} |")
    rows = res["rows"]
    against_trl(rows)
    out += ["", "### Training", "", "| step | system | status | micro-batches x batch | non-pad tokens | tok/s | x TRL "
            "| MFU | peak GiB | plan estimate GiB | estimate / peak | first -> final loss | final loss vs TRL |",
            "|---" * 13 + "|"]
    for r in rows:
        if r["status"] != "ok":
            out.append(f"| {r['step']} | {r['system']} | {r['status']}: {str(r.get('error'))[:200]} |" + " - |" * 10)
            continue
        mfu = fmt(100 * r["mfu"], ".1f") + " %" if r.get("mfu") is not None else (
            "unknown peak" if r["train_type"] == "full" else "-")
        loss_vs = fmt(r.get("final_loss_vs_trl_pct"), "+.2f") + " %" if "final_loss_vs_trl_pct" in r else "-"
        out.append(f"| {r['step']} | {r['system']} | ok | {r['micro_batches']} x {r['batch']} | {r['tokens']:,} | "
                   f"{r['tok_s']:,.0f} | {fmt(r.get('tok_s_over_trl'))} | {mfu} | {peak_cell(r)} | "
                   f"{fmt(r.get('memory_estimate_gib'))} | {fmt(r.get('estimate_over_peak'))} | "
                   f"{fmt(r.get('first_loss'), '.4f')} -> {fmt(r.get('final_loss'), '.4f')} | {loss_vs} |")
    out += ["", "Flags and the plan's choices (plan.json beyond the LR plan):"]
    for r in rows:
        flags = " ".join(Path(f).name if f.startswith("/") else f for f in r.get("flags", []))  # paths: names
        out.append(f"- {r['step']} / {r['system']}: `{flags}`" + (f"; plan: `{json.dumps(r['plan'], default=str)[:600]}`"
                                                                  if r.get("plan") else ""))
    return "\n".join(out) + "\n"
