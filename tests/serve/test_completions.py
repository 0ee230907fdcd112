"""The legacy `/v1/completions` route and `n` choices (chat and completions), over the real server with the official
`openai` client; raw-text continuations are checked against transformers alone (harness.hf_greedy)."""
import httpx
import openai
import pytest

from harness import MAX_TOKENS, ask, hf_greedy

TEMPLATED = "<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\n"  # the chat template's text, by hand


def complete(client, prompt, **kw):
    kw.setdefault("max_tokens", MAX_TOKENS)
    kw.setdefault("temperature", 0)
    return client.completions.create(model="tunewise-tiny", prompt=prompt, **kw)


def test_a_completion_continues_the_raw_text(client, hf, references):
    for prompt in ("12+34=", TEMPLATED):
        ids = hf.tok(prompt)["input_ids"]
        expected, _ = hf_greedy(hf, ids, MAX_TOKENS)
        r = complete(client, prompt)
        assert r.object == "text_completion" and r.id.startswith("cmpl-") and r.model == "tunewise-tiny"
        (choice,) = r.choices
        assert choice.index == 0 and choice.logprobs is None
        assert choice.text == hf.tok.decode([t for t in expected if t not in hf.eos])
        assert choice.finish_reason == ("stop" if expected[-1] in hf.eos else "length")
        assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (len(ids), len(expected))
        assert r.usage.total_tokens == len(ids) + len(expected)
    # no template is added: the template's text written out by hand answers as the chat route does
    assert choice.text == references[("tunewise-tiny", "Who are you?")].text
    assert r.usage.prompt_tokens == references[("tunewise-tiny", "Who are you?")].prompt_tokens


def test_a_streamed_completion_adds_up_and_ends_with_done(client, server):
    whole = complete(client, TEMPLATED, max_tokens=12)
    pieces, finish, usage = [], [], None
    for chunk in complete(client, TEMPLATED, max_tokens=12, stream=True, stream_options={"include_usage": True}):
        assert chunk.object == "text_completion"
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            assert c.index == 0
            pieces.append(c.text)
            finish += [c.finish_reason] if c.finish_reason else []
    assert len([p for p in pieces if p]) > 3 and "".join(pieces) == whole.choices[0].text
    assert finish == [whole.choices[0].finish_reason] == ["length"]
    assert usage.completion_tokens == 12 and usage.prompt_tokens == whole.usage.prompt_tokens
    raw = httpx.post(server + "/v1/completions", headers={"Authorization": f"Bearer {client.api_key}"},
                     json={"model": "tunewise-tiny", "prompt": "12+34=", "max_tokens": 4, "stream": True}).text
    assert raw.endswith("data: [DONE]\n\n") and raw.startswith("data: {")


def test_echo_stop_and_a_list_of_prompts_with_n(client, hf, references):
    chat = references[("tunewise-tiny", "Who are you?")].text
    echoed = complete(client, TEMPLATED, echo=True)
    assert echoed.choices[0].text == TEMPLATED + chat
    streamed = "".join(c.choices[0].text for c in complete(client, TEMPLATED, echo=True, stream=True) if c.choices)
    assert streamed == TEMPLATED + chat
    stop = chat[5:8]
    cut = complete(client, TEMPLATED, stop=[stop])
    assert cut.choices[0].text == chat[:chat.index(stop)] and cut.choices[0].finish_reason == "stop"
    prompts = [TEMPLATED, TEMPLATED.replace("Who are you?", "你是谁？")]
    r = complete(client, prompts, n=2, temperature=1.0, seed=11, echo=True)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    for c in r.choices:  # choice k * n + i is sample i of prompt k
        assert c.text.startswith(prompts[c.index // 2]) and len(c.text) > len(prompts[c.index // 2])
    assert r.choices[0].text != r.choices[1].text and r.choices[2].text != r.choices[3].text
    again = complete(client, prompts, n=2, temperature=1.0, seed=11, echo=True)
    assert [c.text for c in again.choices] == [c.text for c in r.choices]  # a seed makes the whole set reproducible
    assert r.usage.prompt_tokens == sum(len(hf.tok(p)["input_ids"]) for p in prompts)  # each prompt once


def test_n_chat_choices_decode_side_by_side(client, server, references):
    ref = references[("tunewise-tiny", "你是谁？")]
    before = httpx.get(server + "/health").json()["stats"]
    r = ask(client, "你是谁？", n=3)
    after = httpx.get(server + "/health").json()["stats"]
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert [c.message.content for c in r.choices] == [ref.text] * 3  # greedy: n identical choices, as OpenAI's
    assert r.usage.prompt_tokens == ref.prompt_tokens  # the prompt once
    assert r.usage.completion_tokens == 3 * ref.completion_tokens
    steps, row_steps = (after[k] - before.get(k, 0) for k in ("steps", "row_steps"))
    assert row_steps == 3 * steps > 0  # queued together, admitted together: every step decoded all three rows
    sampled = ask(client, "hello", n=3, temperature=1.0, seed=5, max_tokens=16)
    alone = ask(client, "hello", temperature=1.0, seed=5, max_tokens=16)
    texts = [c.message.content for c in sampled.choices]
    assert texts[0] == alone.choices[0].message.content  # choice 0 keeps the seed: n=1 answers as before
    assert len(set(texts)) == 3  # the others draw with seeds of their own


def test_n_streamed_chunks_carry_their_choice_index(client, references):
    ref = references[("tunewise-tiny", "Please introduce yourself.")]
    text, roles, finish = {}, {}, {}
    usage = None
    for chunk in ask(client, "Please introduce yourself.", n=3, stream=True, stream_options={"include_usage": True}):
        usage = chunk.usage or usage
        for c in chunk.choices:
            roles[c.index] = roles.get(c.index, []) + ([c.delta.role] if c.delta.role else [])
            text[c.index] = text.get(c.index, "") + (c.delta.content or "")
            if c.finish_reason:
                finish[c.index] = c.finish_reason
    assert text == {i: ref.text for i in range(3)} and finish == {i: ref.finish_reason for i in range(3)}
    assert roles == {i: ["assistant"] for i in range(3)}
    assert usage.completion_tokens == 3 * ref.completion_tokens and usage.prompt_tokens == ref.prompt_tokens
    c = complete(client, [TEMPLATED] * 2, n=2, max_tokens=4, stream=True)
    assert {x.index for chunk in c for x in chunk.choices} == {0, 1, 2, 3}


@pytest.mark.parametrize("route,kw,param", [
    ("chat", {"top_logprobs": 3}, "top_logprobs"),
    ("chat", {"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ("chat", {"n": 0}, "n"),
    ("chat", {"n": 33}, "n"),  # the server's --max_batch_size is 32
    ("chat", {"logit_bias": {"5": 10}}, "logit_bias"),
    ("text", {"n": 0}, "n"),
    ("text", {"n": 33}, "n"),
    ("text", {"logprobs": 21}, "logprobs"),
    ("text", {"suffix": "the end"}, "suffix"),
    ("text", {"echo": True, "logprobs": 2}, "echo"),
    ("text", {"best_of": 3}, "best_of"),
    ("text", {"prompt": [5, 6, 7]}, "prompt"),
    ("text", {"prompt": ""}, "prompt"),
    ("text", {"prompt": ["hi", ""]}, "prompt.1"),
    ("text", {"max_tokens": 5000}, "prompt"),
])
def test_what_cannot_be_honoured_is_a_400_naming_the_field(client, route, kw, param):
    with pytest.raises(openai.BadRequestError) as e:
        if route == "chat":
            ask(client, "hi", **kw)
        else:
            complete(client, **{"prompt": "hi", **kw})
    assert e.value.status_code == 400 and e.value.param == param
    assert param.split(".")[0] in e.value.message
