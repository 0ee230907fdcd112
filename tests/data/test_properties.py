"""Property-based tests of the data loaders: whatever bytes, JSON values or conversation-like rows a file holds,
`load_conversations` (sft) and `load_preferences` (dpo) return conversations or raise UserError, nothing else; and
well-formed rows come back exactly, whatever the encoding details (BOM, CRLF, .json or .jsonl)."""
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunewise.data.formats import load_conversations
from tunewise.data.preference import REJECTED, load_preferences
from tunewise.errors import UserError

# Deterministic for CI: the same examples on every run, no example database written.
BOUNDED = settings(max_examples=200, deadline=None, derandomize=True, database=None)
SUFFIXES = st.sampled_from([".jsonl", ".json"])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("properties")


def load_both(path) -> list:
    """Both loaders on one file: each returns or raises a one-paragraph UserError naming the file."""
    results = []
    for load in (load_conversations, load_preferences):
        try:
            results.append(load([str(path)]))
        except UserError as e:
            assert str(path) in str(e) and "\n" not in str(e), str(e)
            results.append(None)
    return results


def write(workdir, suffix: str, data: bytes):
    path = workdir / f"data{suffix}"
    path.write_bytes(data)
    return path


def as_file(rows: list, suffix: str, bom: bool = False, crlf: bool = False) -> bytes:
    """Rows as .jsonl (one per line) or .json (a list, one row per line)."""
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    text = "\n".join(lines) + "\n" if suffix == ".jsonl" else "[\n" + ",\n".join(lines) + "\n]\n"
    if crlf:
        text = text.replace("\n", "\r\n")
    return (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8")


# Bytes that start like something: a BOM, a compressed file, JSON.
PREFIXES = st.sampled_from([b"", b"\xef\xbb\xbf", b"\xff\xfe", b"\x1f\x8b", b"[", b"{", b'{"query": "a", "response": "'])


@BOUNDED
@given(prefix=PREFIXES, body=st.binary(max_size=300), suffix=SUFFIXES)
def test_random_bytes_never_raise_anything_but_user_error(workdir, prefix, body, suffix):
    load_both(write(workdir, suffix, prefix + body))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)


@BOUNDED
@given(rows=st.lists(JSON_VALUES, min_size=1, max_size=4), suffix=SUFFIXES)
def test_random_json_values_never_raise_anything_but_user_error(workdir, rows, suffix):
    load_both(write(workdir, suffix, as_file(rows, suffix)))


# Text that is a valid reply: something besides whitespace, no placeholder; any other character, line and
# paragraph separators, CR and a BOM often (str.splitlines would split a row at U+2028).
ODD = st.sampled_from(["\u2028", "\u2029", "\x85", "\x0b", "\x1c", "\r", "\n", "\ufeff", "\t"])
TEXT = st.lists(st.characters() | ODD, min_size=1, max_size=12).map("".join).filter(
    lambda t: t.strip() and "{{" not in t and "}}" not in t)
ENCODINGS = st.fixed_dictionaries({"suffix": SUFFIXES, "bom": st.booleans(), "crlf": st.booleans()})


# Rows built from the names the loaders look for, holding plausible and implausible values; and well-formed rows
# (sft and dpo forms) with a field or two replaced, so that some files load and some fail on one detail.
KEYS = ["messages", "conversations", "query", "prompt", "instruction", "input", "response", "output", "system",
        "history", "chosen", "rejected", REJECTED, "tag", "tools"]
CALL = '{"name": "f", "arguments": {"x": 1}}'  # a tool call as ms-swift and ShareGPT write it
WORDS = st.sampled_from(["", " ", "hi", "{{NAME}}", "{{X}}", "user", "assistant", "system", "human", "gpt", "model",
                         "zh", "你好", "tool", "tool_call", "tool_response", "function_call", "observation", CALL,
                         "[" + CALL + "]", '[{"name": "f"}]']) | st.text(max_size=6)
TURNS = st.dictionaries(st.sampled_from(["role", "content", "from", "value", "tool_calls"]), WORDS | JSON_VALUES,
                        max_size=3)
VALUES = WORDS | JSON_VALUES | st.lists(TURNS, max_size=4) | TURNS | st.lists(st.lists(WORDS, max_size=3), max_size=3)


def well_formed(form: int, q: str, r: str, other: str) -> dict:
    return [{"query": q, "response": r, REJECTED: other},
            {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": r}]},
            {"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": r}]},
            {"prompt": q, "chosen": r, "rejected": other},
            {"conversations": [{"from": "human", "value": q}], "chosen": {"from": "gpt", "value": r},
             "rejected": {"from": "gpt", "value": other}},
            {"tools": [{"name": "f"}],
             "messages": [{"role": "user", "content": q}, {"role": "tool_call", "content": CALL},
                          {"role": "tool", "content": other}, {"role": "assistant", "content": r}]}][form]


NEAR_VALID = st.builds(lambda row, changes: {**row, **changes},
                       st.builds(well_formed, st.integers(0, 5), TEXT, TEXT, TEXT),
                       st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=2))
ROWS = st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=5) | NEAR_VALID


@BOUNDED
@given(rows=st.lists(ROWS, min_size=1, max_size=3), suffix=SUFFIXES)
def test_conversation_like_rows_never_raise_anything_but_user_error(workdir, rows, suffix):
    sft, dpo = load_both(write(workdir, suffix, as_file(rows, suffix)))
    for conv in (sft or []) + (dpo or []):  # what loads is a conversation that ends with a real reply or a call
        last = conv.messages[-1]
        assert last["role"] == "assistant" and (last["content"].strip() or last.get("tool_calls"))
    for pair in dpo or []:
        assert pair.extra[REJECTED].strip() and pair.extra[REJECTED] != pair.messages[-1]["content"]


def sharegpt(messages: list[dict]) -> list[dict]:
    names = {"system": "system", "user": "human", "assistant": "gpt"}
    return [{"from": names[m["role"]], "value": m["content"]} for m in messages]


@settings(BOUNDED, max_examples=100)
@given(system=st.none() | TEXT, pairs=st.lists(st.tuples(TEXT, TEXT), min_size=1, max_size=3),
       form=st.sampled_from(["messages", "sharegpt", "query"]), encoding=ENCODINGS)
def test_well_formed_sft_rows_come_back_exactly(workdir, system, pairs, form, encoding):
    messages = [{"role": "system", "content": system}] if system else []
    for q, r in pairs:
        messages += [{"role": "user", "content": q}, {"role": "assistant", "content": r}]
    row = {"messages": messages} if form == "messages" else {"conversations": sharegpt(messages)}
    if form == "query":
        row = {"query": pairs[-1][0], "response": pairs[-1][1], "history": [list(p) for p in pairs[:-1]],
               **({"system": system} if system else {})}
    (conv,) = load_conversations([str(write(workdir, encoding["suffix"], as_file([row], **encoding)))])
    assert conv.messages == messages


@settings(BOUNDED, max_examples=100)
@given(prompt=TEXT, chosen=TEXT, rejected=TEXT, form=st.sampled_from(["trl", "sharegpt", "ms-swift"]),
       encoding=ENCODINGS)
def test_well_formed_preference_rows_come_back_exactly(workdir, prompt, chosen, rejected, form, encoding):
    row = {"trl": {"prompt": prompt, "chosen": chosen, "rejected": rejected},
           "sharegpt": {"conversations": [{"from": "human", "value": prompt}], "chosen": {"from": "gpt", "value": chosen},
                        "rejected": {"from": "gpt", "value": rejected}},
           "ms-swift": {"query": prompt, "response": chosen, REJECTED: rejected}}[form]
    path = write(workdir, encoding["suffix"], as_file([row], **encoding))
    if chosen == rejected:
        with pytest.raises(UserError, match="identical"):
            load_preferences([str(path)])
        return
    (pair,) = load_preferences([str(path)])
    assert pair.messages == [{"role": "user", "content": prompt}, {"role": "assistant", "content": chosen}]
    assert pair.extra[REJECTED] == rejected
