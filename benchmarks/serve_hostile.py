#!/usr/bin/env python3
"""Does `tunewise serve` hold up? A 50 MB request body, then 1,000 requests at concurrency 16.

    .venv/bin/python benchmarks/serve_hostile.py [--parts body,load] [--body_mb 50] [--requests 1000]
                   [--concurrency 16] [--max_tokens 8] [--num_threads 0] [--json out.json]

A real server is started (`tunewise serve` on 127.0.0.1, serve_batching.py's start_server) and called over its socket.

- body: one POST /v1/chat/completions whose body is --body_mb MiB of JSON (one long user message), while a second
  thread calls GET /health every 0.2 s. Reports the status and time of the big request, the slowest health check
  while it was in flight, and the server's peak resident memory (VmHWM).
- load: --requests chat requests, --concurrency at a time, with the official `openai` client: greedy and seeded
  sampling, some streamed, some with stop strings, base model only. Every reply must be a success with text;
  reports the errors, wall time and latency percentiles.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai

sys.path.insert(0, str(Path(__file__).parent))
from serve_batching import PROMPTS, device_line, finish, start_server  # noqa: E402


def peak_memory_gib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 2**20, 2)
    return float("nan")


def big_body(url: str, model: str, mb: int, pid: int) -> dict:
    piece = "hello world 你好 "
    text = piece * (mb * 2**20 // len(piece.encode()))
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 4},
                      ensure_ascii=False).encode()
    slowest, done = [0.0], threading.Event()

    def watch():
        while not done.is_set():
            t0 = time.perf_counter()
            try:
                httpx.get(url + "/health", timeout=300)
            except httpx.HTTPError:
                pass
            slowest[0] = max(slowest[0], time.perf_counter() - t0)
            time.sleep(0.2)

    watcher = threading.Thread(target=watch)
    watcher.start()
    t0 = time.perf_counter()
    try:
        r = httpx.post(url + "/v1/chat/completions", content=body, timeout=600,
                       headers={"Content-Type": "application/json"})
        status, kind = r.status_code, r.headers.get("content-type")
    except httpx.HTTPError as e:
        status, kind = type(e).__name__, None
    elapsed = time.perf_counter() - t0
    done.set()
    watcher.join()
    return {"part": "body", "body_bytes": len(body), "status": status, "content_type": kind,
            "request_s": round(elapsed, 2), "slowest_health_s": round(slowest[0], 2),
            "server_peak_rss_gib": peak_memory_gib(pid)}


def load(url: str, model: str, n: int, concurrency: int, max_tokens: int) -> dict:
    client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=120)

    def one(i: int):
        kw = {"max_tokens": max_tokens, "temperature": 0}
        if i % 3 == 1:
            kw.update(temperature=0.8, top_p=0.9, seed=i)
        if i % 5 == 2:
            kw["stop"] = ["\n\n"]
        messages = [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]
        t0 = time.perf_counter()
        try:
            if i % 4 == 3:
                pieces = [c.choices[0].delta.content or "" for c in
                          client.chat.completions.create(model=model, messages=messages, stream=True, **kw) if c.choices]
                ok = bool("".join(pieces))
            else:
                ok = bool(client.chat.completions.create(model=model, messages=messages, **kw).choices[0].message.content)
            error = None if ok else "empty reply"
        except openai.OpenAIError as e:
            error = f"{type(e).__name__}: {e}"
        return time.perf_counter() - t0, error

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, range(n)))
    wall = time.perf_counter() - t0
    latencies = sorted(r[0] for r in results)
    errors = [r[1] for r in results if r[1]]
    return {"part": "load", "requests": n, "concurrency": concurrency, "max_tokens": max_tokens,
            "errors": len(errors), "first_errors": errors[:3], "wall_s": round(wall, 1),
            "requests_per_s": round(n / wall, 1), "latency_p50_s": round(latencies[n // 2], 3),
            "latency_p99_s": round(latencies[min(n - 1, n * 99 // 100)], 3),
            "health_after": httpx.get(url + "/health").json()["status"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tunewise-tiny")
    ap.add_argument("--parts", default="body,load")
    ap.add_argument("--body_mb", type=int, default=50)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--max_tokens", type=int, default=8)
    ap.add_argument("--num_threads", type=int, default=0, help="the server's torch threads (0: cores - 1)")
    ap.add_argument("--json", default=None, help="also write the results here")
    a = ap.parse_args()
    device = device_line()
    proc, url = start_server(a.model, "continuous", 32, a.num_threads)
    results = []
    try:
        for part in a.parts.split(","):
            if part == "body":
                results.append(big_body(url, a.model, a.body_mb, proc.pid))
            elif part == "load":
                results.append(load(url, a.model, a.requests, a.concurrency, a.max_tokens))
            else:
                raise SystemExit(f"--parts: unknown part {part!r} (body, load)")
            print(json.dumps(results[-1], ensure_ascii=False), flush=True)
    finally:
        proc.terminate()
        proc.wait(30)
    return finish(device, results, a.json)


if __name__ == "__main__":
    sys.exit(main())
