#!/usr/bin/env python3
"""GGUF export at Qwen2.5-0.5B's shape: how long `tunewise export --quant_method gguf` takes (writing, and the
read-back checks), against llama.cpp's own converter on the same model, and whether the two files agree.

    .venv/bin/python benchmarks/export_gguf.py [--model 0.5B-4L] [--types f16,q8_0,q4_k_m] [--baseline auto|none]
        [--before SRC] [--json FILE]

Each export is its own process (`tunewise export --model FIXTURE --quant_method gguf --gguf_type T`); the parent
takes its wall time and CPU seconds (os.wait4), and export.json's own split (seconds.write, seconds.checks).
Baseline: llama.cpp's `convert_hf_to_gguf.py --outtype f16|q8_0` (its Python converter, from the llama-cpp-python
sdist on PyPI, which vendors llama.cpp; fetched once into the fixture cache), timed the same way; then every tensor
of the two files is compared byte for byte and the metadata key by key. q4_k_m has no Python baseline (llama.cpp
makes it with the compiled llama-quantize).
--before SRC: another tunewise checkout (e.g. `git worktree add /tmp/tw-before COMMIT`) whose src/ runs the same
export just before this checkout's, in the same conditions; both are reported with their commits and the load
average around each run.
"""
from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import qwen_shape  # noqa: E402

LLAMA_SDIST = "llama-cpp-python==0.3.36"


def commit_of(checkout: Path) -> str:
    found = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(checkout), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return (found.stdout.strip() or "unknown") + ("+uncommitted" if dirty else "")


def timed(cmd: list[str], env: dict) -> dict:
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out[-3000:]}")
    return {"wall_s": round(wall, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "peak_rss_gib": round(usage.ru_maxrss / 2**20, 2),
            "load_average_1min": [round(load_before, 1), round(os.getloadavg()[0], 1)]}


def llama_cpp_converter(root: Path) -> Path:
    """convert_hf_to_gguf.py from the llama-cpp-python sdist (llama.cpp vendored), unpacked once, with sentencepiece
    (the converter imports it for every Qwen2 model) installed beside it, for its process only."""
    def fetch(tmp: Path):
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(tmp / "deps"),
                        "sentencepiece"], check=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary=:all:", "--quiet",
                        LLAMA_SDIST, "-d", str(tmp)], check=True)
        sdist = next(tmp.glob("llama_cpp_python-*.tar.gz"))
        with tarfile.open(sdist) as tar:
            members = [m for m in tar.getmembers() if "/vendor/llama.cpp/" in m.name and
                       ("/conversion/" in m.name or "/gguf-py/" in m.name or m.name.endswith("convert_hf_to_gguf.py"))]
            tar.extractall(tmp, members=members, filter="data")
        sdist.unlink()

    folder = qwen_shape._publish(fetch, root / "_llama_cpp")
    return next(folder.glob("*/vendor/llama.cpp/convert_hf_to_gguf.py"))


def compare_files(ours: Path, theirs: Path) -> dict:
    from gguf import GGUFReader

    a, b = GGUFReader(ours), GGUFReader(theirs)
    ta, tb = {t.name: t for t in a.tensors}, {t.name: t for t in b.tensors}
    same_names = set(ta) == set(tb)
    differing = [n for n in ta if n in tb and (ta[n].tensor_type != tb[n].tensor_type
                                              or bytes(ta[n].data.tobytes()) != bytes(tb[n].data.tobytes()))]
    skip = {"general.name", "general.file_type", "GGUF.version", "GGUF.tensor_count", "GGUF.kv_count"}
    keys_a = {k for k in a.fields if not k.startswith(("general.", "GGUF."))} - skip
    keys_b = {k for k in b.fields if not k.startswith(("general.", "GGUF."))} - skip

    def value(reader, key):
        v = reader.fields[key].contents()
        return v

    different_values = sorted(k for k in keys_a & keys_b if value(a, k) != value(b, k))
    return {"tensors": len(ta), "same_tensor_names": same_names, "tensors_differing": differing,
            "keys_only_ours": sorted(keys_a - keys_b), "keys_only_llama_cpp": sorted(keys_b - keys_a),
            "keys_with_other_values": different_values}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="0.5B-4L", choices=list(qwen_shape.SHAPES))
    parser.add_argument("--types", default="f16,q8_0,q4_k_m")
    parser.add_argument("--baseline", default="auto", choices=["auto", "none"])
    parser.add_argument("--cache", help="fixture folder (default: qwen_shape's)")
    parser.add_argument("--before", help="another tunewise checkout to run the same exports with, for comparison")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    root = qwen_shape.cache_root(args.cache)
    model = qwen_shape.build_model(args.model, root)
    def env_for(checkout: Path) -> dict:
        return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(checkout / "src"), os.environ.get("PYTHONPATH")]))}

    env = env_for(HERE.parent)
    converter = llama_cpp_converter(root) if args.baseline == "auto" else None
    results = {"model": args.model, "cpus": os.cpu_count(), "load_average": os.getloadavg(),
               "commit": commit_of(HERE.parent), "exports": {}}
    if args.before:
        results["before_commit"] = commit_of(Path(args.before))

    def export(gguf_type: str, out: Path, environment: dict) -> dict:
        run = timed([sys.executable, "-m", "tunewise.cli", "export", "--model", str(model), "--quant_method",
                     "gguf", "--gguf_type", gguf_type, "--to_ollama", "true", "--output_dir", str(out)], environment)
        info = json.loads((out / "export.json").read_text())
        return {**run, **{f"{k}_s": v for k, v in info["seconds"].items()},
                "bytes": (out / info["gguf"]["file"]).stat().st_size,
                "logits_max_abs_diff": info["checks"]["logits"]["max_abs_diff"],
                "perplexity_ratio": info["checks"]["perplexity"]["ratio"],
                "answers_same": [a["same"] for a in info["checks"]["answers"]],
                "tensor_types": info["gguf"]["tensor_types"]}

    with tempfile.TemporaryDirectory(prefix="export-gguf-") as tmp:
        for gguf_type in args.types.split(","):
            out = Path(tmp) / f"tunewise-{gguf_type}"
            entry = {}
            if args.before:
                earlier = Path(tmp) / f"before-{gguf_type}"
                entry["before"] = export(gguf_type, earlier, env_for(Path(args.before)))
            entry["tunewise"] = export(gguf_type, out, env)
            if args.before:
                entry["before"]["same_file"] = filecmp.cmp(earlier / f"model-{gguf_type}.gguf",
                                                           out / f"model-{gguf_type}.gguf", shallow=False)
                entry["cpu_ratio_before_over_now"] = round(entry["before"]["cpu_s"] / entry["tunewise"]["cpu_s"], 2)
                shutil.rmtree(earlier, ignore_errors=True)
            info = json.loads((out / "export.json").read_text())
            if converter is not None and gguf_type in ("f16", "q8_0"):
                theirs = Path(tmp) / f"llama-cpp-{gguf_type}.gguf"
                deps = converter.parents[3] / "deps"
                base = timed([sys.executable, str(converter), str(model), "--outtype", gguf_type, "--outfile",
                              str(theirs)], {**env, "PYTHONPATH": f"{converter.parent / 'gguf-py'}{os.pathsep}{deps}"})
                entry["llama_cpp_convert"] = {**base, "bytes": theirs.stat().st_size}
                entry["same_as_llama_cpp"] = compare_files(out / info["gguf"]["file"], theirs)
            results["exports"][gguf_type] = entry
            print(json.dumps({gguf_type: entry}, indent=1), flush=True)
            shutil.rmtree(out, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
