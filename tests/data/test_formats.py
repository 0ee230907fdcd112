import json

import pytest

from tunewise.data.formats import load_conversations, read_spec
from tunewise.errors import UserError


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows),
                    encoding="utf-8")
    return str(path)


def test_query_response_history_and_system(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [
        {"query": "q2", "response": "r2", "system": "sys", "history": [["q1", "r1"]]},
        {"instruction": "do", "input": "this", "output": "done"},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
    ])
    convs = load_conversations([f])
    assert [m["role"] for m in convs[0].messages] == ["system", "user", "assistant", "user", "assistant"]
    assert convs[1].messages[0]["content"] == "do\nthis"
    assert convs[2].messages[-1]["content"] == "hello"
    assert convs[2].origin.endswith("d.jsonl:3")


def test_json_list_rows_know_their_line(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('[\n  {"query": "a", "response": "b"},\n\n  {"query": "c"}\n]\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"d\.json:4: missing field 'response'"):
        load_conversations([str(path)])


@pytest.mark.parametrize("line, message", [
    ('{"query": "a", "response": "b"', r":2: not valid JSON"),
    ('{"response": "b"}', r":2: missing field 'query'"),
    ('{"query": "a"}', r":2: missing field 'response'"),
    ('{"query": 3, "response": "b"}', r":2: field 'query' must be a string"),
    ('{"messages": [{"role": "bot", "content": "x"}]}', r":2: messages\[0\]\.role is 'bot'"),
])
def test_malformed_rows_name_file_line_and_field(tmp_path, line, message):
    f = write_jsonl(tmp_path / "bad.jsonl", [{"query": "ok", "response": "ok"}, line])
    with pytest.raises(UserError, match=r"bad\.jsonl" + message):
        load_conversations([f])


def test_self_cognition_placeholders_follow_row_language():
    convs = load_conversations(["self_cognition"], ["小黄", "Xiao Huang"], ["魔搭", "ModelScope"])
    assert len(convs) >= 80
    text = {c.extra["tag"]: [] for c in convs}
    for c in convs:
        text[c.extra["tag"]].append(c.messages[-1]["content"])
    assert all("小黄" in t and "魔搭" in t for t in text["zh"])
    assert all("Xiao Huang" in t and "ModelScope" in t for t in text["en"])
    assert not any("{{" in t for ts in text.values() for t in ts)


def test_leftover_placeholder_is_an_error(tmp_path):
    with pytest.raises(UserError, match=r"self_cognition\.jsonl:1: .*\{\{NAME\}\}.*--model_name"):
        load_conversations(["self_cognition"])
    f = write_jsonl(tmp_path / "p.jsonl", [{"query": "who", "response": "I am {{NAME}} of {{TEAM}}"}])
    with pytest.raises(UserError, match=r"p\.jsonl:1: .*\{\{TEAM\}\}"):
        load_conversations([f], ["N"], ["A"])


def test_sampling_with_hash_is_seeded_and_upsamples(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [{"query": str(i), "response": "r"} for i in range(5)])
    a = [c.messages[0]["content"] for c in read_spec(f + "#3", seed=1)]
    b = [c.messages[0]["content"] for c in read_spec(f + "#3", seed=1)]
    assert a == b and len(set(a)) == 3
    many = read_spec(f + "#12", seed=1)
    assert len(many) == 12 and len({c.messages[0]["content"] for c in many}) == 5
    with pytest.raises(UserError, match="positive number"):
        read_spec(f + "#x")
    with pytest.raises(UserError, match="no such file"):
        read_spec(str(tmp_path / "missing.jsonl"))
