"""`tunewise serve` end to end: a real server process on loopback, called with the official `openai` client."""
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from harness import KEY, Q, PROMPTS, ask
from tunewise.cli import run_command
from tunewise.errors import UserError


def test_models_lists_the_base_and_each_adapter(client, adapter):
    models = {m.id: m for m in client.models.list().data}
    assert set(models) == {"tunewise-tiny", "xh"}
    assert models["xh"].parent == "tunewise-tiny"


def test_non_streaming_chat_and_usage(client, references):
    r = ask(client, "你是谁？")
    ref = references[("tunewise-tiny", "你是谁？")]
    assert r.object == "chat.completion" and r.model == "tunewise-tiny"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == ref.text
    assert r.choices[0].finish_reason == ref.finish_reason
    assert r.usage.prompt_tokens == ref.prompt_tokens
    assert r.usage.completion_tokens == ref.completion_tokens
    assert r.usage.total_tokens == ref.prompt_tokens + ref.completion_tokens


def test_streaming_chat_pieces_add_up(client, references):
    stream = ask(client, "Please introduce yourself.", stream=True, stream_options={"include_usage": True})
    pieces, finish, usage, roles = [], None, None, []
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            roles += [choice.delta.role] if choice.delta.role else []
            pieces += [choice.delta.content] if choice.delta.content else []
            finish = choice.finish_reason or finish
    ref = references[("tunewise-tiny", "Please introduce yourself.")]
    assert roles == ["assistant"]
    assert len(pieces) > 3  # streamed piece by piece
    assert "".join(pieces) == ref.text
    assert finish == ref.finish_reason
    assert usage.completion_tokens == ref.completion_tokens and usage.prompt_tokens == ref.prompt_tokens


def test_adapter_is_chosen_by_model_name(client, references):
    base = ask(client, "你是谁？").choices[0].message.content
    tuned = ask(client, "你是谁？", model="xh").choices[0].message.content
    assert base == references[("tunewise-tiny", "你是谁？")].text
    assert tuned == references[("xh", "你是谁？")].text
    assert base != tuned


def test_concurrent_requests_for_base_and_adapter_share_batches(client, server, references):
    jobs = [(m, p) for p in PROMPTS for m in ("tunewise-tiny", "xh")]
    with ThreadPoolExecutor(len(jobs)) as pool:
        answers = list(pool.map(lambda job: ask(client, job[1], model=job[0]).choices[0].message.content, jobs))
    for job, answer in zip(jobs, answers):
        assert answer == references[job].text, job
    stats = httpx.get(server + "/health").json()["stats"]
    assert stats["max_batch"] > 1  # requests were decoded together, not one by one
    assert stats["mixed_adapter_steps"] > 0  # base and adapter rows in one forward pass


def test_system_message_is_used(client):
    plain = ask(client, "Who are you?", max_tokens=4)
    with_system = client.chat.completions.create(
        model="tunewise-tiny", max_tokens=4, temperature=0,
        messages=[{"role": "system", "content": "You are Robo, made by Acme."}, {"role": "user", "content": "Who are you?"}])
    assert with_system.usage.prompt_tokens > plain.usage.prompt_tokens + 5


def test_sampling_parameters(client, references):
    a = ask(client, "hello", temperature=1.0, seed=7, max_tokens=16)
    b = ask(client, "hello", temperature=1.0, seed=7, max_tokens=16)
    assert a.choices[0].message.content == b.choices[0].message.content
    greedy = references[("tunewise-tiny", "hello")].text
    narrow = ask(client, "hello", temperature=1.5, top_p=1e-6, seed=1)  # nucleus of one token: greedy
    assert narrow.choices[0].message.content == greedy
    short = ask(client, "Please introduce yourself.", max_tokens=3)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 3
    full = references[("tunewise-tiny", "Please introduce yourself.")].text
    stop = full[4:6]
    cut = ask(client, "Please introduce yourself.", stop=[stop, "@@@"])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == full[:full.index(stop)]
    streamed = "".join(c.choices[0].delta.content or "" for c in
                       ask(client, "Please introduce yourself.", stop=stop, stream=True) if c.choices)
    assert streamed == full[:full.index(stop)]


def test_api_key_refused_and_accepted(server, client):
    bad = openai.OpenAI(base_url=server + "/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.chat.completions.create(model="tunewise-tiny", messages=Q, max_tokens=2)
    assert e.value.status_code == 401 and e.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    missing = httpx.post(server + "/v1/chat/completions", json={"model": "tunewise-tiny", "messages": Q})
    assert missing.status_code == 401 and "API key" in missing.json()["error"]["message"]
    assert httpx.get(server + "/v1/models").status_code == 401
    assert httpx.get(server + "/v1/models", headers={"Authorization": "Basic " + KEY}).status_code == 401
    assert httpx.get(server + "/health").status_code == 200  # health checks need no key
    assert ask(client, "hello", max_tokens=2).choices[0].message.content is not None


def test_openai_client_raises_bad_request_for_invalid_parameters(client):
    with pytest.raises(openai.BadRequestError) as e:
        ask(client, "hi", temperature=5)
    assert "temperature" in e.value.message
    with pytest.raises(openai.NotFoundError):
        ask(client, "hi", model="gpt-4o")


def test_defaults_bind_to_loopback():
    from tunewise.serve.app import ServeArgs

    assert ServeArgs().host == "127.0.0.1"
    for host in ("localhost", "127.0.0.2", "::1", "[::1]"):
        assert ServeArgs(host=host).open_warning() is None


def test_a_network_bind_without_api_key_is_refused_unless_allowed(capsys):
    from tunewise.cli import main
    from tunewise.serve import app

    for host in ("0.0.0.0", "::", "192.168.1.7", "example.com"):
        assert main(["serve", "--host", host]) == 2
        assert "without --api-key" in capsys.readouterr().err
    assert app.ServeArgs(host="0.0.0.0", api_key="k").open_warning() is None
    # allowed: a warning first (vLLM, missing from this Python, then stops the run before anything binds)
    assert main(["serve", "--host", "0.0.0.0", "--allow_no_api_key", "--engine", "vllm", "--vllm_python",
                 sys.executable]) == 2
    err = capsys.readouterr().err
    assert err.index("warning: serving on 0.0.0.0:8000 without --api-key") < err.index("has no vLLM")


def test_bad_cli_input_is_a_user_error(adapter, tmp_path):

    def main(argv):
        return run_command("serve", argv)

    with pytest.raises(UserError, match="NAME=CHECKPOINT|no such checkpoint"):
        main(["--adapters", f"x={tmp_path / 'missing'}"])
    with pytest.raises(UserError, match="--engine"):
        main(["--engine", "tgi"])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "config.json").write_text("{}")
    with pytest.raises(UserError, match="full model"):
        main(["--adapters", f"x={tmp_path / 'full'}"])
