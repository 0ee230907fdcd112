import json

import pytest

from tunewise.data.preference import REJECTED, encode_pairs, load_preferences, trl_row
from tunewise.errors import UserError


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows),
                    encoding="utf-8")
    return str(path)


GOOD = {"prompt": "q", "chosen": "yes", "rejected": "no"}


def test_three_row_forms_give_the_same_pair(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [
        {"prompt": "hi", "chosen": "hello", "rejected": "go away", "system": "be nice"},
        {"prompt": [{"role": "system", "content": "be nice"}, {"role": "user", "content": "hi"}],
         "chosen": [{"role": "assistant", "content": "hello"}], "rejected": [{"role": "assistant", "content": "go away"}]},
        {"messages": [{"role": "system", "content": "be nice"}, {"role": "user", "content": "hi"},
                      {"role": "assistant", "content": "hello"}], "rejected_response": "go away"},
        {"system": "be nice", "query": "hi", "response": "hello", "rejected_response": "go away"},
    ])
    pairs = load_preferences([f])
    rows = [trl_row(p) for p in pairs]
    assert all(row == rows[0] for row in rows), rows
    assert rows[0] == {"prompt": [{"role": "system", "content": "be nice"}, {"role": "user", "content": "hi"}],
                       "chosen": [{"role": "assistant", "content": "hello"}],
                       "rejected": [{"role": "assistant", "content": "go away"}]}
    assert [p.origin.rsplit(":", 1)[1] for p in pairs] == ["1", "2", "3", "4"]


def test_multi_turn_prompt_keeps_history_and_system_flag_fills_in(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [{"prompt": [
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}],
        "chosen": "d", "rejected": "e", "kind": "x"}])
    (pair,) = load_preferences([f])
    assert pair.extra == {"kind": "x", REJECTED: "e"}
    row = trl_row(pair, system="sys")
    assert [m["role"] for m in row["prompt"]] == ["system", "user", "assistant", "user"]


@pytest.mark.parametrize("line, message", [
    ('{"prompt": "a", "chosen": "b"', r":2: not valid JSON"),
    ('{"prompt": "a", "chosen": "b"}', r":2: missing field 'rejected'"),
    ('{"chosen": "b", "rejected": "c"}', r":2: missing field 'prompt'"),
    ('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}',
     r":2: missing field 'rejected_response'"),
    ('{"prompt": 3, "chosen": "b", "rejected": "c"}', r":2: field 'prompt' must be a string or a list of messages"),
    ('{"prompt": "a", "chosen": 1, "rejected": "c"}', r":2: field 'chosen' must be a string"),
    ('{"prompt": [{"role": "bot", "content": "a"}], "chosen": "b", "rejected": "c"}',
     r":2: in 'prompt': messages\[0\]\.role is 'bot'"),
    ('{"prompt": "a", "chosen": [{"role": "user", "content": "b"}], "rejected": "c"}',
     r":2: field 'chosen' must hold exactly one assistant message"),
    ('{"prompt": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "chosen": "c", '
     '"rejected": "d"}', r":2: messages must alternate user/assistant"),
    ('{"prompt": "a", "chosen": "same", "rejected": "same"}', r":2: the chosen and rejected replies are identical"),
    ('{"prompt": "a", "chosen": "b", "rejected": " "}', r":2: the rejected reply is empty"),
    ('{"query": "a", "rejected_response": "c"}', r":2: missing field 'response'"),
    ('{"prompt": "who", "chosen": "I am {{NAME}}", "rejected": "no"}', r":2: .*placeholder \{\{NAME\}\}"),
    ('["a", "b"]', r":2: expected a JSON object"),
])
def test_malformed_rows_name_file_line_and_field(tmp_path, line, message):
    f = write_jsonl(tmp_path / "bad.jsonl", [GOOD, line])
    with pytest.raises(UserError, match=r"bad\.jsonl" + message):
        load_preferences([f])


def test_placeholders_are_filled_in_both_replies(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "Who are you?", "chosen": "I am {{NAME}} by {{AUTHOR}}.",
                                            "rejected": "I am not {{NAME}}."}])
    (pair,) = load_preferences([f], ["小黄", "Xiao Huang"], ["魔搭", "ModelScope"])
    assert pair.messages[-1]["content"] == "I am Xiao Huang by ModelScope."
    assert pair.extra[REJECTED] == "I am not Xiao Huang."


def test_builtin_set_and_heldout_are_disjoint():
    train = [trl_row(p) for p in load_preferences(["concise"])]
    heldout = [trl_row(p) for p in load_preferences(["concise_heldout"])]
    assert len(train) >= 150 and len(heldout) >= 40
    assert not {r["prompt"][-1]["content"] for r in train} & {r["prompt"][-1]["content"] for r in heldout}
    # every rejected reply is its chosen reply with padding around it
    assert all(r["chosen"][0]["content"].rstrip("。.") in r["rejected"][0]["content"] for r in train + heldout)
    assert len(load_preferences(["concise#7"])) == 7


def test_over_long_pairs_are_deleted_or_left_to_truncate(tmp_path):
    from tunewise.models.load import load_tokenizer, resolve_model

    tok = load_tokenizer(resolve_model("tunewise-tiny"))
    f = write_jsonl(tmp_path / "d.jsonl", [GOOD, {"prompt": "q", "chosen": "long " * 50, "rejected": "no"}])
    pairs = load_preferences([f])
    rows, stats = encode_pairs(tok, pairs, None, max_length=30)
    assert len(rows) == 1 and stats.deleted_too_long == 1
    rows, stats = encode_pairs(tok, pairs, None, max_length=30, truncation="right")
    assert len(rows) == 2 and stats.truncated == 1
    with pytest.raises(UserError, match="left is not supported"):
        encode_pairs(tok, pairs, None, max_length=30, truncation="left")


def test_sharegpt_preference_rows_give_the_same_pair(tmp_path):
    prompt = [{"from": "system", "value": "be nice"}, {"from": "human", "value": "hi"}]
    f = write_jsonl(tmp_path / "d.jsonl", [
        {"conversations": prompt, "chosen": {"from": "gpt", "value": "hello"},
         "rejected": {"from": "gpt", "value": "go away"}},  # LLaMA-Factory
        {"conversations": prompt[1:], "system": "be nice", "chosen": "hello", "rejected": "go away"},
        {"conversations": prompt + [{"from": "gpt", "value": "hello"}], "rejected_response": "go away"},  # ms-swift
        {"prompt": "hi", "chosen": "hello", "rejected": "go away", "system": "be nice"},
    ])
    rows = [trl_row(p) for p in load_preferences([f])]
    assert all(row == rows[-1] for row in rows), rows


@pytest.mark.parametrize("line, message", [
    ('{"conversations": [{"from": "human", "value": "a"}], "chosen": {"from": "human", "value": "b"}, '
     '"rejected": {"from": "gpt", "value": "c"}}', r":2: field 'chosen' must be the assistant's turn"),
    ('{"conversations": [{"from": "human", "value": "a"}], "chosen": {"from": "gpt"}, "rejected": "c"}',
     r":2: chosen needs 'from' and 'value'"),
    ('{"conversations": [{"from": "human", "value": "a"}], "chosen": {"from": "gpt", "value": "b"}}',
     r":2: missing field 'rejected'"),
    ('{"conversations": [{"from": "human", "value": "a"}], "chosen": {"from": "gpt", "value": ""}, "rejected": "c"}',
     r":2: field 'chosen\.value' is empty"),
    ('{"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}], "chosen": "c", '
     '"rejected": "d"}', r":2: messages must alternate user/assistant"),
    ('{"conversations": [{"from": "robot", "value": "a"}], "chosen": "c", "rejected": "d"}',
     r":2: conversations\[0\]\.from is 'robot'"),
])
def test_malformed_sharegpt_preference_rows(tmp_path, line, message):
    f = write_jsonl(tmp_path / "bad.jsonl", [GOOD, line])
    with pytest.raises(UserError, match=r"bad\.jsonl" + message):
        load_preferences([f])
