#!/usr/bin/env python3
"""`tunewise serve --engine vllm` against the HF engine, in one invocation: startup seconds, tokens/s and whether the
greedy answers are the same, for the base model and a LoRA adapter.

    PYTHONPATH=src .venv/bin/python benchmarks/serve_vllm.py [--requests 16] [--max_tokens 64]
                   [--engines hf,vllm,vllm-compiled] [--model tunewise-tiny] [--json out.json]

Needs .venv-vllm/ (`bash scripts/setup_vllm.sh`). For each engine a real `tunewise serve --model M --adapters
xh=CKPT` process is started on 127.0.0.1 (the checkpoint is made here: a random rank-8 LoRA on every linear layer)
and timed from process start to the first 200 from /health. Then, for the base model and the adapter, with the
official `openai` client and greedy decoding: N requests one after another, then the same N at once, each exactly
--max_tokens tokens (ignore_eos), and N plain answers (ending at the end-of-turn token) compared with the HF
engine's. `vllm-compiled` is vLLM with torch.compile (--enforce_eager false).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai

from serve_batching import PROMPTS, device_line, finish, free_port, one

FLAGS = {"hf": ["--engine", "hf"], "vllm": ["--engine", "vllm"],
         "vllm-compiled": ["--engine", "vllm", "--enforce_eager", "false"]}


def make_adapter(folder: Path, model: str) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model

    from tunewise.models.load import load_model, load_tokenizer, resolve_model

    base = resolve_model(model)
    torch.manual_seed(0)
    peft_model = get_peft_model(load_model(base), LoraConfig(r=8, lora_alpha=16, target_modules="all-linear",
                                                             init_lora_weights=False, task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.mul_(20)  # answers visibly unlike the base's
    ckpt = folder / "checkpoint-1"
    peft_model.save_pretrained(ckpt)
    load_tokenizer(base).save_pretrained(ckpt)
    (folder / "args.json").write_text(json.dumps({"command": "sft", "args": {"model": model, "system": None}}))
    return ckpt


def start(engine: str, model: str, adapter: Path, log: Path):
    port = free_port()
    code = "import sys; from tunewise.cli import main; sys.exit(main(['serve', *sys.argv[1:]]))"
    t0 = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-c", code, *FLAGS[engine], "--model", model, "--adapters",
                                 f"xh={adapter}", "--port", str(port), "--log_level", "warning"],
                                stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ, TOKENIZERS_PARALLELISM="false"))
    url = f"http://127.0.0.1:{port}"
    while time.perf_counter() - t0 < 900:
        if proc.poll() is not None:
            raise SystemExit(f"{engine}: the server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url, time.perf_counter() - t0
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"{engine}: the server did not start in 900 s")


def measure(engine: str, model: str, adapter: Path, n: int, max_tokens: int, folder: Path) -> tuple[list, dict]:
    proc, url, startup = start(engine, model, adapter, folder / f"{engine}.log")
    rows, answers = [], {}
    try:
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=900)
        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(n)]
        for name in (model, "xh"):
            for p in prompts[:4]:  # warm-up
                one(client, name, p, 8)
            answers[name] = [one(client, name, p, max_tokens)[1] for p in PROMPTS]
            t0 = time.perf_counter()
            seq = [one(client, name, p, max_tokens, ignore_eos=True) for p in prompts]
            t_seq = time.perf_counter() - t0
            with ThreadPoolExecutor(n) as pool:
                t0 = time.perf_counter()
                conc = list(pool.map(lambda p: one(client, name, p, max_tokens, ignore_eos=True), prompts))
                t_conc = time.perf_counter() - t0
            assert {r[0] for r in seq + conc} == {max_tokens}, "ignore_eos was not honoured"
            rows.append({"engine": engine, "model": "base" if name == model else "LoRA adapter",
                         "startup_s": round(startup, 1), "requests": n, "max_tokens": max_tokens,
                         "tok_per_s_sequential": round(n * max_tokens / t_seq, 1),
                         "tok_per_s_concurrent": round(n * max_tokens / t_conc, 1),
                         "mean_latency_s_sequential": round(sum(r[2] for r in seq) / n, 3),
                         "same_fixed_answers_seq_conc": f"{sum(a[1] == b[1] for a, b in zip(seq, conc))}/{n}"})
    finally:
        proc.terminate()
        proc.wait(60)
    return rows, answers


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tunewise-tiny")
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--max_tokens", type=int, default=64)
    ap.add_argument("--engines", default="hf,vllm,vllm-compiled")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    device = device_line()
    results, answers = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        adapter = make_adapter(folder / "run", a.model)
        for engine in a.engines.split(","):
            rows, answers[engine] = measure(engine, a.model, adapter, a.requests, a.max_tokens, folder)
            for row in rows:
                print(json.dumps(row), flush=True)
            results += rows
    reference = answers.get("hf")
    for row in results:
        name = a.model if row["model"] == "base" else "xh"
        if reference is not None:
            got = answers[row["engine"]][name]
            row["same_greedy_answers_as_hf"] = f"{sum(x == y for x, y in zip(got, reference[name]))}/{len(got)}"
    print(f"\n| engine | model | startup (s) | tokens/s one at a time | tokens/s {a.requests} at once | "
          "mean latency, one at a time (s) | greedy answers = HF engine's |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['engine']} | {r['model']} | {r['startup_s']} | {r['tok_per_s_sequential']} | "
              f"{r['tok_per_s_concurrent']} | {r['mean_latency_s_sequential']} | {r.get('same_greedy_answers_as_hf', '-')} |")
    print()
    return finish(device, results, a.json, " (other processes on the machine slow every engine)")


if __name__ == "__main__":
    sys.exit(main())
