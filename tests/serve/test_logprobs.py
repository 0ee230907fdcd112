"""Logprobs over the real server with the official `openai` client, checked against the model's log-softmax computed
independently by transformers (harness.hf_greedy): what is reported is the raw distribution (vLLM's default
raw_logprobs), before temperature, top-p and penalties."""
import pytest

from harness import ask, hf_greedy

PROMPT = "你是谁？"
TOL = 1e-4


@pytest.fixture(scope="module")
def greedy(hf):
    """The chat prompt as transformers' own chat template renders it, its greedy continuation and logprob rows."""
    ids = hf.tok.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True,
                                     tokenize=True, return_dict=True)["input_ids"]
    out, rows = hf_greedy(hf, ids, 16)
    return ids, out, rows


def name(hf, token_id: int) -> str | None:
    """The token's text when it is whole characters; None for part of a character."""
    text = hf.tok.decode([token_id])
    return None if "\ufffd" in text else text


def check_against(hf, content, out, rows, k):
    """Each reported token is the greedy one, its logprob the model's, its top_logprobs the model's top k, sorted."""
    worst = 0.0
    assert len(content) == len([t for t in out if t not in hf.eos])  # the end-of-turn token is not listed
    for pos, item in enumerate(content):
        assert item.token == hf.tok.decode([out[pos]]) and bytes(item.bytes) == item.token.encode()
        worst = max(worst, abs(item.logprob - rows[pos, out[pos]].item()))
        top = rows[pos].topk(k)
        assert [t.logprob for t in item.top_logprobs] == sorted((t.logprob for t in item.top_logprobs), reverse=True)
        assert len(item.top_logprobs) == k and item.top_logprobs[0].token == item.token
        assert item.top_logprobs[0].logprob == item.logprob
        for t, value, i in zip(item.top_logprobs, top.values.tolist(), top.indices.tolist()):
            assert abs(t.logprob - value) < TOL and t.token == (name(hf, i) or t.token)
    assert worst < TOL, worst
    return worst


def test_chat_logprobs_are_the_models_log_softmax(client, hf, greedy):
    ids, out, rows = greedy
    r = ask(client, PROMPT, logprobs=True, top_logprobs=5)
    assert r.usage.prompt_tokens == len(ids) and r.usage.completion_tokens == len(out)  # the same prompt
    content = r.choices[0].logprobs.content
    assert "".join(t.token for t in content) == r.choices[0].message.content
    print(f"greedy chat: max |logprob - transformers| = {check_against(hf, content, out, rows, 5):.2e}")
    bare = ask(client, PROMPT, logprobs=True).choices[0].logprobs.content  # top_logprobs absent: 0 alternatives
    assert [t.top_logprobs for t in bare] == [[]] * len(bare)
    assert [t.token for t in bare] == [t.token for t in content]
    assert ask(client, PROMPT).choices[0].logprobs is None


def test_streamed_chat_logprobs_add_up_to_the_whole(client, hf, greedy):
    ids, out, rows = greedy
    content, text = [], ""
    for chunk in ask(client, PROMPT, logprobs=True, top_logprobs=3, n=2, stream=True):
        for c in chunk.choices:
            if c.index == 1:
                text += c.delta.content or ""
                content += c.logprobs.content if c.logprobs else []
    assert "".join(t.token for t in content) == text
    check_against(hf, content, out, rows, 3)


def test_logprobs_are_of_the_raw_distribution_not_the_sampled_one(client, hf, greedy):
    """temperature 1.5 with a nucleus of one token draws the greedy tokens; their logprobs are still the model's,
    not log_softmax(logits / 1.5)."""
    ids, out, rows = greedy
    r = ask(client, PROMPT, temperature=1.5, top_p=1e-6, seed=3, logprobs=True, top_logprobs=4)
    check_against(hf, r.choices[0].logprobs.content, out, rows, 4)
    scaled = (rows / 1.5).log_softmax(-1)
    assert max(abs(scaled[p, t] - rows[p, t]).item() for p, t in enumerate(out)) > 0.01  # the two differ here


def test_legacy_completion_logprobs(client, hf):
    prompt = "<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\n"
    out, rows = hf_greedy(hf, hf.tok(prompt)["input_ids"], 16)
    r = client.completions.create(model="tunewise-tiny", prompt=prompt, max_tokens=16, temperature=0, logprobs=3)
    choice = r.choices[0]
    lp = choice.logprobs
    assert "".join(lp.tokens) == choice.text and len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs)
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]
    for pos, (token, value, top) in enumerate(zip(lp.tokens, lp.token_logprobs, lp.top_logprobs)):
        assert token == hf.tok.decode([out[pos]]) and abs(value - rows[pos, out[pos]].item()) < TOL
        values, ids = rows[pos].topk(3)
        assert sorted(top.values(), reverse=True) == pytest.approx(values.tolist(), abs=TOL)
        assert {name(hf, i) for i in ids.tolist()} - {None} <= top.keys()
    streamed = [c.choices[0].logprobs for c in client.completions.create(
        model="tunewise-tiny", prompt=prompt, max_tokens=16, temperature=0, logprobs=3, stream=True)
        if c.choices and c.choices[0].logprobs]
    assert sum((s.tokens for s in streamed), []) == lp.tokens
    assert sum((s.text_offset for s in streamed), []) == lp.text_offset
    sampled = client.completions.create(model="tunewise-tiny", prompt=prompt, max_tokens=8, temperature=1.8, seed=2,
                                        logprobs=0)  # the sampled token is always among top_logprobs
    lp = sampled.choices[0].logprobs
    assert [list(top) for top in lp.top_logprobs] == [[t] for t in lp.tokens]


def test_a_stop_string_cuts_the_tokens_wholly_inside_it(client):
    full = ask(client, "Please introduce yourself.", logprobs=True).choices[0]
    tokens = [t.token for t in full.logprobs.content]
    stop = tokens[3] + tokens[4]  # two whole tokens
    at = full.message.content.index(stop)
    cut = ask(client, "Please introduce yourself.", logprobs=True, stop=stop).choices[0]
    assert cut.message.content == full.message.content[:at]
    starts = [sum(len(t) for t in tokens[:i]) for i in range(len(tokens))]
    assert [t.token for t in cut.logprobs.content] == [t for t, start in zip(tokens, starts) if start < at]
    assert len(cut.logprobs.content) < len(tokens)
    streamed = [t.token for chunk in ask(client, "Please introduce yourself.", logprobs=True, stop=stop, stream=True)
                for c in chunk.choices if c.logprobs for t in c.logprobs.content]
    assert streamed == [t.token for t in cut.logprobs.content]  # held back with the text, never sent then cut


def test_token_bytes_of_byte_level_pieces(hf):
    """A character split over several byte-level tokens: each token's raw bytes, named by OpenAI's bytes:\\x.. form;
    the tokens' bytes put together are the text's."""
    from tunewise.serve.logprobs import TokenBytes

    names = TokenBytes(hf.tok)
    text = "我是小维 🙂 — naïve ∑"
    ids = hf.tok(text, add_special_tokens=False)["input_ids"]
    pieces = [names(i) for i in ids]
    assert b"".join(bytes(b) for _, b in pieces) == text.encode()
    partial = [(name, b) for name, b in pieces if name.startswith("bytes:")]
    assert partial  # the emoji is not one token here
    for name, b in partial:
        assert name == "bytes:" + "".join(f"\\x{x:02x}" for x in b)
    assert names(hf.tok.convert_tokens_to_ids("<|im_end|>")) == ("<|im_end|>", list(b"<|im_end|>"))
