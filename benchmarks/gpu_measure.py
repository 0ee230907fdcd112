#!/usr/bin/env python3
"""One step of benchmarks/gpu.sh, in a process of its own (gpu_bench.py starts it with a timeout).

    python benchmarks/gpu_measure.py --result R.json fixture NAME CACHE DEVICE     # build a qwen_shape.py fixture
    python benchmarks/gpu_measure.py --result R.json tunewise -- SFT FLAGS...        # `tunewise sft FLAGS`
    python benchmarks/gpu_measure.py --result R.json trl SPEC.json                   # train_throughput.run_trl(spec)

A training step patches transformers' Trainer, whichever trainer the system builds: every micro-batch records its
start time (after a CUDA synchronize, so a step's time is its kernels' time), its shape, non-pad and label tokens;
the end of Trainer.train records the loop's end, the log history, and this process's peak memory: on CUDA
torch.cuda.max_memory_reserved / max_memory_allocated, everywhere the peak resident set (ru_maxrss). The result
is written as JSON when training returns; a failure leaves no result and the parent records the log's tail.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GiB = 2**30


def _sync() -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def memory_peaks() -> dict:
    """This process's peaks: CUDA reserved / allocated (None without CUDA) and resident set, in GiB."""
    import torch

    peaks = {"peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
             "peak_reserved_gib": None, "peak_allocated_gib": None}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        peaks.update(peak_reserved_gib=torch.cuda.max_memory_reserved() / GiB,
                     peak_allocated_gib=torch.cuda.max_memory_allocated() / GiB)
    return peaks


def install_probe(result: Path) -> None:
    import transformers

    stats: dict = {"steps": []}
    train, step = transformers.Trainer.train, transformers.Trainer.training_step

    def timed_train(self, *args, **kwargs):
        import torch

        stats["threads"] = torch.get_num_threads()
        _sync()
        stats["start"] = time.perf_counter()
        out = train(self, *args, **kwargs)
        _sync()
        stats.update(end=time.perf_counter(), log_history=self.state.log_history, **memory_peaks())
        result.write_text(json.dumps(stats, default=str))
        return out

    def recorded_step(self, model, inputs, *args, **kwargs):
        _sync()
        ids, mask = inputs["input_ids"], inputs.get("attention_mask")
        stats["steps"].append({"t": time.perf_counter(), "shape": list(ids.shape),
                               "labels": int((inputs["labels"] != -100).sum()),
                               "tokens": int(mask.sum()) if mask is not None else ids.numel()})  # padding-free: all
        return step(self, model, inputs, *args, **kwargs)

    transformers.Trainer.train, transformers.Trainer.training_step = timed_train, recorded_step


def build_fixture(name: str, cache: str, device: str, result: Path) -> int:
    """qwen_shape.build_model under `with torch.device(device)` (random init on the GPU, then saved)."""
    import torch

    sys.path.insert(0, str(HERE))
    import qwen_shape

    t0 = time.perf_counter()
    cached = (qwen_shape.cache_root(cache) / name).is_dir()  # built by an earlier run: nothing timed
    with torch.device(device):
        folder = qwen_shape.build_model(name, qwen_shape.cache_root(cache))
    meta = json.loads((folder / "fixture.json").read_text())
    result.write_text(json.dumps({"folder": str(folder), "seconds": time.perf_counter() - t0, "cached": cached,
                                  "parameters": meta["parameters"], "dtype": meta["dtype"]}))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--result", required=True, help="JSON written on success")
    p.add_argument("kind", choices=("fixture", "tunewise", "trl"))
    p.add_argument("rest", nargs="*")
    a = p.parse_args(argv)
    result = Path(a.result)
    if a.kind == "fixture":
        return build_fixture(*a.rest, result)
    install_probe(result)
    if a.kind == "tunewise":
        from tunewise.cli import main as tunewise_main

        return tunewise_main(["sft", *a.rest])
    sys.path.insert(0, str(HERE))
    from train_throughput import run_trl

    run_trl(json.loads(Path(a.rest[0]).read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
