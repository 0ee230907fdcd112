#!/usr/bin/env python3
"""How much does batching buy `tunewise serve`? 32 chat requests at once vs the same 32 one after another.

    .venv/bin/python benchmarks/serve_batching.py [--requests 32] [--max_tokens 64] [--modes continuous,dynamic,none]
                   [--workloads answers,fixed,staggered] [--num_threads 0] [--model tunewise-tiny] [--json out.json]

For each workload and batching mode a real server is started (`tunewise serve --batching MODE` on 127.0.0.1),
warmed up, and called with the official `openai` client: first the N requests one after another, then the same N
concurrently (one thread each), in the same run. Greedy decoding, so both passes generate the same tokens (the
"same answers" column checks it). The ratio is sequential wall time / concurrent wall time.

Workloads: `answers` (each reply ends at the model's end-of-turn token, at most --max_tokens), `fixed` (exactly
--max_tokens per reply, vLLM's ignore_eos), `staggered` (fixed, the concurrent requests sent 25 ms apart, so that
requests arrive while a batch is already decoding: where continuous batching differs from dynamic batching).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai

PROMPTS = ["你是谁？", "Who are you?", "12+34=", "Please introduce yourself.", "hello", "你好", "7+8=", "介绍一下你自己。",
           "What can you do?", "3+5=", "Copy this: 春眠不觉晓", "Who made you?", "谁开发了你？", "21+17=",
           "Copy this: hello world", "What is your name?"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, mode: str, max_batch: int, threads: int):
    port = free_port()
    code = "import sys; from tunewise.cli import main; sys.exit(main(['serve', *sys.argv[1:]]))"
    proc = subprocess.Popen([sys.executable, "-c", code, "--model", model, "--port", str(port), "--batching", mode,
                             "--max_batch_size", str(max_batch), "--num_threads", str(threads), "--log_level", "warning"],
                            env=dict(os.environ, TOKENIZERS_PARALLELISM="false"))
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("server did not start")


def device_line() -> str:
    """The device, printed with the date and the load average (other jobs on the machine move every number)."""
    import torch

    device = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    print(f"device: {device}; date: {time.strftime('%Y-%m-%d %H:%M %Z')}; "
          f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    return device


def one(client, model, prompt, max_tokens, ignore_eos=False, delay=0.0):
    """(completion tokens, text, latency in s) of one request sent after `delay` seconds."""
    time.sleep(delay)
    extra = {"ignore_eos": True} if ignore_eos else None
    t0 = time.perf_counter()
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                       max_tokens=max_tokens, temperature=0, extra_body=extra)
    return r.usage.completion_tokens, r.choices[0].message.content, time.perf_counter() - t0


def measure(model: str, mode: str, n: int, max_tokens: int, max_batch: int, workload: str, threads: int) -> dict:
    ignore_eos = workload in ("fixed", "staggered")
    gap = 0.025 if workload == "staggered" else 0.0  # staggered: request i is sent i * 25 ms after the first
    proc, url = start_server(model, mode, max_batch, threads)
    try:
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600)
        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(n)]
        for p in prompts[:4]:  # warm-up
            one(client, model, p, 8)
        t0 = time.perf_counter()
        seq = [one(client, model, p, max_tokens, ignore_eos) for p in prompts]
        t_seq = time.perf_counter() - t0
        with ThreadPoolExecutor(n) as pool:
            t0 = time.perf_counter()
            conc = list(pool.map(lambda ip: one(client, model, ip[1], max_tokens, ignore_eos, ip[0] * gap),
                                 enumerate(prompts)))
            t_conc = time.perf_counter() - t0
        health = httpx.get(url + "/health").json()
        stats = health["stats"]
    finally:
        proc.terminate()
        proc.wait(30)
    tokens_seq, tokens_conc = sum(r[0] for r in seq), sum(r[0] for r in conc)
    same = sum(a[1] == b[1] for a, b in zip(seq, conc))
    label = {"answers": f"answers (<= {max_tokens} tokens)", "fixed": f"exactly {max_tokens} tokens",
             "staggered": f"exactly {max_tokens} tokens, sent 25 ms apart"}[workload]
    return {"mode": mode, "workload": label,
            "mean_latency_s_sequential": round(sum(r[2] for r in seq) / n, 3),
            "mean_latency_s_concurrent": round(sum(r[2] for r in conc) / n, 3),
            "requests": n, "max_tokens": max_tokens, "sequential_s": round(t_seq, 2),
            "concurrent_s": round(t_conc, 2), "ratio": round(t_seq / t_conc, 2),
            "tokens_sequential": tokens_seq, "tokens_concurrent": tokens_conc,
            "tok_per_s_sequential": round(tokens_seq / t_seq, 1), "tok_per_s_concurrent": round(tokens_conc / t_conc, 1),
            "identical_answers": f"{same}/{n}", "max_batch_seen": stats.get("max_batch", 0),
            "server_threads": health["threads"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tunewise-tiny")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--max_tokens", type=int, default=64)
    ap.add_argument("--max_batch_size", type=int, default=32)
    ap.add_argument("--modes", default="continuous,dynamic,none")
    ap.add_argument("--workloads", default="answers,fixed,staggered",
                    help="answers: replies end at the end-of-turn token; fixed: exactly --max_tokens (ignore_eos); "
                         "staggered: fixed, with the concurrent requests sent 25 ms apart")
    ap.add_argument("--num_threads", type=int, default=0, help="the server's torch threads (0: cores - 1)")
    ap.add_argument("--json", default=None, help="also write the results here")
    a = ap.parse_args()
    device = device_line()
    results = []
    for workload in a.workloads.split(","):
        for mode in a.modes.split(","):
            r = measure(a.model, mode, a.requests, a.max_tokens, a.max_batch_size, workload, a.num_threads)
            results.append(r)
            print(json.dumps(r), flush=True)
    print("\n| workload | batching | server threads | sequential (s) | concurrent (s) | ratio | tokens/s seq → conc "
          "| mean latency concurrent (s) | same answers | max batch |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['workload']} | {r['mode']} | {r['server_threads']} | {r['sequential_s']} | {r['concurrent_s']} | **{r['ratio']}×** | "
              f"{r['tok_per_s_sequential']} → {r['tok_per_s_concurrent']} | {r['mean_latency_s_concurrent']} | "
              f"{r['identical_answers']} | "
              f"{r['max_batch_seen']} |")
    print()
    return finish(device, results, a.json, " (other processes on the machine slow both passes)")


def finish(device: str, results: list[dict], path: str | None, note: str = "") -> int:
    """The load average after the run, and the results as JSON in `path` (--json)."""
    print(f"load average after: {os.getloadavg()[0]:.2f}{note}")
    if path:
        Path(path).write_text(json.dumps({"device": device, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
