"""Hostile input to a real `tunewise serve` over its socket: each bad request fails alone with a JSON 4xx, whatever
else is decoding, and clients that give up free their rows (the server is conftest.py's, default limits)."""
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from harness import KEY, PROMPTS, Q, ask

OK = {"model": "tunewise-tiny", "messages": Q, "max_tokens": 2}
AUTH = {"Authorization": f"Bearer {KEY}"}
MIB = 2**20


def chunked(size: int):
    """A body of `size` bytes without a Content-Length: httpx sends an iterator chunked."""
    return lambda: (b" " * 65536 for _ in range(size // 65536))


def hostile_requests():
    """(method, path, raw body (bytes, str, or a function making an iterator) or None, JSON body or None, headers)."""
    def raw_ok(extra: str) -> str:  # OK with a raw JSON field appended (NaN, 1e400: what json.dumps cannot write)
        return json.dumps(OK)[:-1] + ", " + extra + "}"

    raw = ["", "{", "not json", "[1, 2]", "null", '"text"', "{\"model\": }", "\xff\xfe",
           "[" * 100_000 + "]" * 100_000, raw_ok('"metadata": ' + "[" * 50_000 + "]" * 50_000),  # nested too deep
           raw_ok('"temperature": NaN'), raw_ok('"top_p": Infinity'), raw_ok('"max_tokens": 1e400'),
           raw_ok('"seed": ' + "9" * 5000),  # past Python's 4300-digit int limit
           '{"model": "\\ud800", "messages": [{"role": "user", "content": "hi"}]}',  # a lone surrogate
           json.dumps(OK).encode() + b" " * (3 * MIB), chunked(3 * MIB), chunked(20 * MIB)]  # over 2 MiB
    bodies = [{}, {"model": "tunewise-tiny"}, {"messages": Q}, {**OK, "messages": []}, {**OK, "messages": "hi"},
              {**OK, "messages": [{"role": "robot", "content": "hi"}]}, {**OK, "messages": [{"content": "hi"}]},
              {**OK, "messages": [{"role": "user"}]}, {**OK, "messages": [{"role": "user", "content": 5}]},
              {**OK, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
              {**OK, "messages": [{"role": "assistant", "content": "hi"}]}, {**OK, "messages": [None]},
              {**OK, "messages": [[]]}, {**OK, "messages": [{"role": "user", "content": None}]}, {**OK, "messages": None},
              {**OK, "model": ""}, {**OK, "model": "no-such-model"}, {**OK, "model": 5}, {**OK, "model": None},
              {**OK, "temperature": -1}, {**OK, "temperature": 3}, {**OK, "temperature": "hot"},
              {**OK, "top_p": 0}, {**OK, "top_p": 1.5}, {**OK, "max_tokens": 0}, {**OK, "max_tokens": -5},
              {**OK, "max_tokens": "many"}, {**OK, "max_tokens": 10 ** 9}, {**OK, "max_completion_tokens": 0},
              {**OK, "stop": ["a", "b", "c", "d", "e"]}, {**OK, "stop": [""]}, {**OK, "stop": 5},
              {**OK, "stop": "x" * 300}, {**OK, "seed": "x"}, {**OK, "seed": 1.5}, {**OK, "seed": 2**70},
              {**OK, "seed": 2**64}, {**OK, "seed": -1}, {**OK, "top_k": 2**70}, {**OK, "top_k": -2},
              {**OK, "top_logprobs": 100}, {**OK, "repetition_penalty": 0}, {**OK, "stream": [1]},
              {**OK, "n": 33}, {**OK, "n": 10**9}, {**OK, "n": 0},
              {**OK, "tools": [{"type": "function", "function": {"name": "f"}}]}, {**OK, "top_logprobs": 3},
              {**OK, "logprobs": True, "top_logprobs": 21}, {**OK, "logprobs": True, "top_logprobs": -1},
              {**OK, "logprobs": [1]}, {**OK, "logit_bias": {"5": 100}}, {**OK, "response_format": {"type": "json_object"}},
              {**OK, "presence_penalty": 1.0}, {**OK, "stream_options": "yes"},
              {**OK, "messages": [{"role": "user", "content": "hi " * 5000}]}]
    text = {"model": "tunewise-tiny", "prompt": "hi", "max_tokens": 2}
    completions = [{}, {"prompt": "hi"}, {"model": "tunewise-tiny"}, {**text, "prompt": 5}, {**text, "prompt": []},
                   {**text, "prompt": [1, 2, 3]}, {**text, "prompt": [[1, 2]]}, {**text, "prompt": ""},
                   {**text, "prompt": ["hi", ""]}, {**text, "prompt": ["hi"] * 257}, {**text, "prompt": None}, {**text, "prompt": ["hi", None]},
                   {**text, "model": "gpt-3.5-turbo-instruct"}, {**text, "suffix": "end"}, {**text, "best_of": 3},
                   {**text, "echo": True, "logprobs": 1}, {**text, "logprobs": 21}, {**text, "logprobs": -1},
                   {**text, "logprobs": "many"}, {**text, "n": 0}, {**text, "n": 33}, {**text, "max_tokens": 0},
                   {**text, "max_tokens": 10**9}, {**text, "temperature": 9}, {**text, "stop": [""]},
                   {**text, "seed": 2**70}, {**text, "presence_penalty": 1}, {**text, "logit_bias": {"1": 1}},
                   {**text, "prompt": "hi " * 5000}, {**text, "echo": [1]}]
    reqs = [("POST", "/v1/chat/completions", body, None, AUTH) for body in raw]
    reqs += [("POST", "/v1/chat/completions", None, body, AUTH) for body in bodies]
    reqs += [("POST", "/v1/completions", body, None, AUTH) for body in raw[:8]]
    reqs += [("POST", "/v1/completions", None, body, AUTH) for body in completions]
    reqs += [("GET", "/v1/chat/completions", None, None, AUTH), ("POST", "/v1/completion", None, OK, AUTH),
             ("GET", "/v1/models/no-such-model", None, None, AUTH), ("DELETE", "/v1/models", None, None, AUTH),
             ("POST", "/v1/chat/completions", None, OK, {}), ("POST", "/v1/chat/completions", None, OK,
                                                              {"Authorization": "Bearer sk-wrong"}),
             ("GET", "/health", None, None, {"X-Big": "a" * MIB})]  # a 1 MiB header
    return reqs


def send(http: httpx.Client, method, path, content, body, headers) -> httpx.Response:
    return http.request(method, path, content=content() if callable(content) else content, json=body,
                        headers={"Content-Type": "application/json", **headers})


def assert_json_error(r: httpx.Response, what):
    assert 400 <= r.status_code < 500, (what, r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/json"), (what, r.headers["content-type"], r.text[:300])
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"] and error["type"], r.text


def test_hostile_requests_fail_alone_among_valid_ones(server, client, references):
    hostile = hostile_requests()
    assert len(hostile) >= 50
    valid = [(m, p) for p in PROMPTS for m in ("tunewise-tiny", "xh")] * 3
    jobs = [("hostile", h) for h in hostile]
    for i, v in enumerate(valid):  # a valid request every few hostile ones
        jobs.insert(i * 3, ("valid", v))
    with httpx.Client(base_url=server, timeout=60) as http, ThreadPoolExecutor(16) as pool:
        def run(job):
            kind, what = job
            if kind == "valid":
                return job, ask(client, what[1], model=what[0]).choices[0].message.content
            return job, send(http, *what)

        results = list(pool.map(run, jobs))
    for (kind, what), result in results:
        if kind == "valid":
            assert result == references[what].text, what
        else:
            assert_json_error(result, what[:2] + (str(what[2])[:80], what[3]))
    assert ask(client, "你是谁？").choices[0].message.content == references[("tunewise-tiny", "你是谁？")].text
    assert httpx.get(server + "/health").json()["status"] == "ok"


def test_a_huge_seed_fails_alone_while_a_batch_decodes(client):
    """A seed of 2**70 used to reach the scheduler and fail every request decoding with it (8 of 8 got a 500)."""
    def long_one(i):
        return ask(client, PROMPTS[i % len(PROMPTS)], max_tokens=48, extra_body={"ignore_eos": True})

    with ThreadPoolExecutor(8) as pool:
        batch = [pool.submit(long_one, i) for i in range(8)]
        time.sleep(0.3)  # the batch is decoding
        with pytest.raises(openai.BadRequestError) as bad:
            ask(client, "hello", temperature=1.0, seed=2**70)
        replies = [f.result() for f in batch]
    assert bad.value.status_code == 400 and "seed" in bad.value.message
    assert [r.usage.completion_tokens for r in replies] == [48] * 8


def test_a_50_mb_body_is_refused_before_it_is_read(served):
    """50 MB took 68-112 s and 9.8 GiB to refuse, the event loop blocked all along (health checks hung)."""
    body = b'{"model": "tunewise-tiny", "messages": [{"role": "user", "content": "' + b"x" * (50 * 10**6) + b'"}]}'
    peak = peak_rss(served.proc.pid)
    slowest, done = [0.0], threading.Event()

    def watch():
        while not done.is_set():
            t0 = time.perf_counter()
            assert httpx.get(served.url + "/health", timeout=30).status_code == 200
            slowest[0] = max(slowest[0], time.perf_counter() - t0)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    t0 = time.perf_counter()
    r = httpx.post(served.url + "/v1/chat/completions", content=body, timeout=60,
                   headers={**AUTH, "Content-Type": "application/json"})
    elapsed = time.perf_counter() - t0
    done.set()
    watcher.join()
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    assert elapsed < 10 and slowest[0] < 2, (elapsed, slowest)
    assert peak_rss(served.proc.pid) - peak < 200 * MIB  # never held whole


def peak_rss(pid: int) -> int:
    line = next(x for x in open(f"/proc/{pid}/status") if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def long_request(**kw) -> dict:
    return {"model": "tunewise-tiny", "messages": Q, "max_tokens": 1900, "temperature": 0, "ignore_eos": True, **kw}


def wait_idle(server, seconds: float) -> dict:
    deadline = time.time() + seconds
    while ((health := httpx.get(server + "/health").json())["running"] or health["waiting"]) and time.time() < deadline:
        time.sleep(0.05)
    return health


def test_a_non_stream_client_that_times_out_frees_its_row(server):
    steps = wait_idle(server, 30)["stats"].get("row_steps", 0)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server + "/v1/chat/completions", json=long_request(), headers=AUTH, timeout=httpx.Timeout(30, read=1))
    health = wait_idle(server, 2)
    assert health["running"] == health["waiting"] == 0  # 1,900 tokens take several seconds here: it was cancelled, not finished
    assert 0 < health["stats"]["row_steps"] - steps < 1900


def test_a_stream_client_that_leaves_frees_its_row(server):
    steps = wait_idle(server, 30)["stats"].get("row_steps", 0)
    with httpx.stream("POST", server + "/v1/chat/completions", json=long_request(stream=True), headers=AUTH,
                      timeout=30) as r:
        pieces = (line for line in r.iter_lines() if '"content": "' in line and '"content": ""' not in line)
        assert next(pieces) and next(pieces)  # decoding
    health = wait_idle(server, 2)
    assert health["running"] == health["waiting"] == 0
    assert 0 < health["stats"]["row_steps"] - steps < 1900


def test_an_unforeseen_error_is_a_json_500_with_its_traceback_logged(caplog):
    """The catch-all, on a route that fails (create_app has none that should): uvicorn with tunewise's handlers."""
    import uvicorn
    from fastapi import FastAPI

    from harness import free_port
    from tunewise.serve.limits import MAX_HEADER_BYTES, JsonErrorH11Protocol, install_error_handlers

    app = FastAPI()
    install_error_handlers(app, 1024)

    @app.get("/boom")
    async def boom():
        return 1 / 0

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_config=None, http=JsonErrorH11Protocol,
                                           h11_max_incomplete_event_size=MAX_HEADER_BYTES))
    thread = threading.Thread(target=server.run)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        r = httpx.get(f"http://127.0.0.1:{port}/boom")
        bad = httpx.get(f"http://127.0.0.1:{port}/boom", headers={"X-Big": "a" * MIB})
    finally:
        server.should_exit = True
        thread.join(10)
    assert r.status_code == 500 and r.headers["content-type"] == "application/json"
    assert r.json()["error"] == {"message": "internal error: ZeroDivisionError: division by zero", "type": "server_error",
                                 "param": None, "code": None}
    assert "ZeroDivisionError" in caplog.text and "Traceback" in caplog.text
    assert bad.status_code == 431 and bad.json()["error"]["code"] == "request_header_too_large"
