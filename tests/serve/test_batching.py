"""The batching scheduler against the plain engine: same greedy answers, whatever joins the batch when."""
import threading
import time

import pytest

from tunewise.args import Sampling
from tunewise.infer.engine import Engine
from tunewise.models.generate import Reply
from tunewise.serve.engine import BatchEngine
from tunewise.serve.generation import Delta, Detokenizer, Done, Request

PROMPTS = ["你是谁？", "Who are you?", "12+34=", "Please introduce yourself in a few words.", "你好",
           "Copy this: 春眠不觉晓"]


@pytest.fixture(scope="module")
def reference():
    return Engine.load("tunewise-tiny")


@pytest.fixture(scope="module")
def engine():
    e = BatchEngine(Engine.load("tunewise-tiny").checkpoint.base, "tunewise-tiny", max_batch_size=8)
    yield e
    e.close()


def msgs(p):
    return [{"role": "user", "content": p}]


def test_detokenizer_matches_a_full_decode(reference):
    tok = reference.tokenizer
    text = "我是小维，由图维实验室开发。I am TinyWise 🙂 — 春眠不觉晓"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    d = Detokenizer(tok)
    seen = []
    for i in ids:
        d.add(i)
        seen.append(d.text)
    d.flush()
    assert d.text == tok.decode(ids, skip_special_tokens=True)
    assert all("\ufffd" not in s for s in seen)  # never half a character


def test_requests_joining_a_running_batch_answer_as_alone(engine, reference):
    s = Sampling(max_new_tokens=16)
    expected = {p: reference.chat(msgs(p), s) for p in PROMPTS}
    results, threads = {}, []

    def run(p):
        results[p] = engine.chat("tunewise-tiny", msgs(p), s)

    for i, p in enumerate(PROMPTS):  # staggered: later requests join batches already decoding
        threads.append(threading.Thread(target=run, args=(p,)))
        threads[-1].start()
        time.sleep(0.02 * (i % 3))
    for t in threads:
        t.join(60)
    for p in PROMPTS:
        assert results[p].text == expected[p].text, p
        assert (results[p].finish_reason, results[p].completion_tokens) == \
               (expected[p].finish_reason, expected[p].completion_tokens)
    assert engine.scheduler.stats["max_batch"] > 1
    assert engine.scheduler.stats["admissions"] < len(PROMPTS) or engine.scheduler.stats["max_batch"] > 2


def test_stream_holds_back_a_possible_stop_string(engine, reference):
    full = reference.chat(msgs("Please introduce yourself in a few words."), Sampling(max_new_tokens=20)).text
    stop = full[5:8]
    pieces = list(engine.stream("tunewise-tiny", msgs("Please introduce yourself in a few words."),
                                Sampling(max_new_tokens=20), stop=[stop]))
    reply = pieces[-1]
    assert isinstance(reply, Reply) and reply.finish_reason == "stop"
    assert "".join(pieces[:-1]) == reply.text == full[:full.index(stop)]
    assert all(stop not in p for p in pieces[:-1])


def test_cancelled_request_leaves_the_batch(engine, monkeypatch):
    monkeypatch.setattr(engine.scheduler, "stop_ids", set())  # no end-of-turn: it would run to 2000 tokens
    events = []
    req = engine.request("tunewise-tiny", msgs("hello"), Sampling(max_new_tokens=2000, temperature=1.0, seed=0),
                         None, events.append)
    time.sleep(0.2)
    req.cancel()
    deadline = time.time() + 10
    while engine.scheduler.running and time.time() < deadline:
        time.sleep(0.05)
    assert engine.scheduler.running == 0
    assert events and not any(isinstance(e, Done) for e in events)
    monkeypatch.undo()
    assert engine.chat("tunewise-tiny", msgs("hello"), Sampling(max_new_tokens=3)).completion_tokens == 3


def test_per_request_sampling_in_one_batch(engine, reference):
    greedy = reference.chat(msgs("hello"), Sampling(max_new_tokens=12)).text
    out = {}

    def run(key, sampling):
        out[key] = engine.chat("tunewise-tiny", msgs("hello"), sampling)

    jobs = {"greedy": Sampling(max_new_tokens=12), "seed1": Sampling(temperature=1.2, max_new_tokens=12, seed=1),
            "seed1again": Sampling(temperature=1.2, max_new_tokens=12, seed=1),
            "topk1": Sampling(temperature=2.0, top_k=1, max_new_tokens=12, seed=5),
            "short": Sampling(max_new_tokens=2)}
    threads = [threading.Thread(target=run, args=item) for item in jobs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert out["greedy"].text == greedy == out["topk1"].text
    assert out["seed1"].text == out["seed1again"].text
    assert out["short"].completion_tokens == 2 and out["short"].finish_reason == "length"


def test_a_failing_forward_fails_only_its_batch(engine, monkeypatch):
    sched = engine.scheduler
    original = sched._forward
    monkeypatch.setattr(sched, "_forward", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        engine.chat("tunewise-tiny", msgs("hello"), Sampling(max_new_tokens=4))
    monkeypatch.setattr(sched, "_forward", original)
    assert engine.chat("tunewise-tiny", msgs("hello"), Sampling(max_new_tokens=4)).completion_tokens == 4


def test_events_reach_the_callback(engine):
    got = []
    done = threading.Event()

    def emit(e):
        got.append(e)
        if not isinstance(e, Delta):
            done.set()

    engine.scheduler.submit(Request(engine.prompt_ids("tunewise-tiny", msgs("你好")), emit, Sampling(max_new_tokens=8)))
    assert done.wait(30)
    assert isinstance(got[-1], Done) and got[-1].reply.completion_tokens <= 8
    assert "".join(e.text for e in got[:-1]) == got[-1].reply.text


def test_adapter_added_while_serving_under_any_name(engine, tmp_path):
    from harness import make_adapter

    ckpt = str(make_adapter(tmp_path / "v1.2-run"))
    served = engine.add_adapter(ckpt, ckpt)  # the web UI names an adapter by its path: dots and slashes
    assert served.adapter != ckpt and "." not in served.adapter
    q, s = msgs("hello"), Sampling(max_new_tokens=8)
    tuned = Engine.load(adapters=[ckpt])
    assert engine.chat(ckpt, q, s).text == tuned.chat(q, s).text
    assert engine.chat("tunewise-tiny", q, s).text == Engine.load("tunewise-tiny").chat(q, s).text


def test_a_request_whose_own_step_raises_fails_alone(engine, reference):
    """What HTTP validation keeps out, sent to the scheduler directly: a seed torch.Generator refuses (it used to fail
    the whole batch), a top_p the batched filter cannot hold, a repetition penalty that is not a number. Each of those
    requests gets its error; the greedy and sampled ones beside them answer as if alone."""
    s = Sampling(max_new_tokens=12)
    good = {p: s for p in PROMPTS[:3]} | {"hello": Sampling(max_new_tokens=12, temperature=1e-45)}  # < eps: greedy
    bad = {"seed": Sampling(temperature=1.0, seed=2**70), "top_p": Sampling(temperature=1.0, top_p="x"),
           "penalty": Sampling(repetition_penalty="x")}
    sampled = Sampling(temperature=1.0, seed=3, max_new_tokens=12)
    expected = {p: reference.chat(msgs(p), s).text for p in good} | {"sampled": engine.chat("tunewise-tiny",
                                                                                         msgs("hello"), sampled).text}
    out, threads = {}, []

    def run(key, prompt, sampling):
        try:
            out[key] = engine.chat("tunewise-tiny", msgs(prompt), sampling).text
        except RuntimeError as e:
            out[key] = e

    jobs = [(p, p, x) for p, x in good.items()] + [("sampled", "hello", sampled)]
    jobs += [(k, "hello", x) for k, x in bad.items()]
    for job in jobs:
        threads.append(threading.Thread(target=run, args=job))
        threads[-1].start()
    for t in threads:
        t.join(60)
    for key in bad:
        assert isinstance(out[key], RuntimeError) and "generation failed" in str(out[key]), (key, out[key])
    assert {k: out[k] for k in expected} == expected
    assert engine.chat("tunewise-tiny", msgs("hello"), s).text == expected["hello"]
