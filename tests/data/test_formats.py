import gzip
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


def test_sharegpt_rows_with_a_system_field_or_turn(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [
        {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}], "system": "sys"},
        {"conversations": [{"from": "system", "value": "sys"}, {"from": "user", "value": "hi"},
                           {"from": "model", "value": "hello"}], "id": 7},
        {"conversations": [{"from": "human", "value": "hi"}, {"from": "assistant", "value": "hello"}]},
    ])
    convs = load_conversations([f])
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert [c.messages for c in convs] == [[{"role": "system", "content": "sys"}] + chat] * 2 + [chat]
    assert convs[1].extra == {"id": 7}


def test_a_system_field_is_kept_in_message_rows_too(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [{"messages": [{"role": "user", "content": "a"},
                                                         {"role": "assistant", "content": "b"}], "system": "s"}])
    assert load_conversations([f])[0].messages[0] == {"role": "system", "content": "s"}


@pytest.mark.parametrize("row, message", [
    ({"conversations": [{"from": "human", "value": "a"}, {"from": "bot", "value": "b"}]},
     r":2: conversations\[1\]\.from is 'bot'; expected one of human, user, gpt"),
    ({"conversations": [{"from": "human", "value": "a"}, {"from": "gpt"}]}, r":2: conversations\[1\] needs 'from'"),
    ({"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": None}]},
     r":2: field 'conversations\[1\]\.value' must be a string, got null"),
    ({"conversations": {"from": "human"}}, r":2: field 'conversations' must be a non-empty list, got"),
    ({"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": " \n"}]},
     r":2: field 'conversations\[1\]\.value' is empty"),
    ({"query": "a", "response": ""}, r":2: field 'response' is empty; an assistant reply must hold text"),
    ({"instruction": "", "input": " ", "output": "b"}, r":2: fields 'instruction' and 'input' are empty"),
    ({"query": "\t", "response": "b"}, r":2: field 'query' is empty"),
    ({"query": "a", "response": "b", "history": [["q", ""]]}, r":2: field 'history\[0\]\[1\]' is empty"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": ""}]},
     r":2: field 'messages\[1\]\.content' is empty"),
    ({"query": "a", "response": "b", "input": 0}, r":2: field 'input' must be a string, got number"),
    ({"query": "a", "response": "b", "history": 0}, r":2: field 'history' must be a list"),
    ({"messages": [{"role": "user\nx" * 40, "content": "a"}]}, r":2: messages\[0\]\.role is 'user\\nx.*…; expected"),
])
def test_sharegpt_and_empty_fields_name_file_line_and_field(tmp_path, row, message):
    f = write_jsonl(tmp_path / "bad.jsonl", [{"query": "ok", "response": "ok"}, row])
    with pytest.raises(UserError, match=r"bad\.jsonl" + message) as e:
        load_conversations([f])
    assert "\n" not in str(e.value)


def test_instruction_and_input_join_without_a_stray_newline(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [{"instruction": "", "input": "this", "output": "done"},
                                           {"instruction": "do", "input": None, "output": "done"}])
    assert [c.messages[0]["content"] for c in load_conversations([f])] == ["this", "do"]


GOOD_ROWS = [{"query": "a", "response": "b"}, {"query": "c", "response": "d"}, {"query": "e"}]


def bom_crlf(rows, suffix) -> bytes:
    """Rows as a Windows editor may save them: a UTF-8 byte-order mark and CRLF line ends."""
    lines = [json.dumps(r) for r in rows]
    text = "\r\n".join(lines) + "\r\n" if suffix == ".jsonl" else "[\r\n" + ",\r\n".join(lines) + "\r\n]\r\n"
    return b"\xef\xbb\xbf" + text.encode("utf-8")


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_a_bom_and_crlf_line_ends_just_work_and_lines_still_count(tmp_path, suffix):
    path = tmp_path / f"d{suffix}"
    path.write_bytes(bom_crlf(GOOD_ROWS[:2], suffix))
    assert [c.messages[1]["content"] for c in load_conversations([str(path)])] == ["b", "d"]
    path.write_bytes(bom_crlf(GOOD_ROWS, suffix))
    with pytest.raises(UserError, match=rf"d{suffix}:{3 if suffix == '.jsonl' else 4}: missing field 'response'"):
        load_conversations([str(path)])


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_unicode_line_separators_inside_a_string_stay_in_the_string(tmp_path, suffix):
    row = {"query": "a\u2028b\x85c", "response": "d\u2029e"}
    path = tmp_path / f"d{suffix}"
    text = json.dumps(row, ensure_ascii=False)
    path.write_text(text if suffix == ".jsonl" else f"[{text}]", encoding="utf-8")
    (conv,) = load_conversations([str(path)])
    assert [m["content"] for m in conv.messages] == [row["query"], row["response"]]


@pytest.mark.parametrize("data, message", [
    (gzip.compress(b'{"query": "a", "response": "b"}\n'), r"d\.jsonl: is gzip-compressed; decompress it"),
    ('{"query": "a", "response": "b"}\n'.encode("utf-16"), r"d\.jsonl: is UTF-16 .*; save it as UTF-8"),
    ('{"query": "a", "response": "b"}\n'.encode("utf-16-be"), r"d\.jsonl: is UTF-16 .*many NUL bytes"),
    (b'{"query": "a", "response": "b"}\n\n{"query": "caf\xe9", "response": "b"}\n',
     r"d\.jsonl:3: not UTF-8 text \(byte 0xe9\); save the file as UTF-8"),
    (b'{"query": "a", "response": "b"}\n{"query": "\x00"}\n', r"d\.jsonl:2: holds a NUL byte"),
    (b"", r"d\.jsonl: the file is empty"),
    (b"\n \r\n", r"d\.jsonl: the file is empty"),
    (b"[" * 100_000, r"d\.jsonl:1: JSON too deeply nested"),
])
def test_encodings_and_binary_files_are_named(tmp_path, data, message):
    path = tmp_path / "d.jsonl"
    path.write_bytes(data)
    with pytest.raises(UserError, match=message):
        load_conversations([str(path)])


def test_a_hash_in_a_file_name_is_part_of_the_name(tmp_path, capsys):
    odd = write_jsonl(tmp_path / "a#b.jsonl", [{"query": str(i), "response": "r"} for i in range(4)])
    assert len(read_spec(odd)) == 4  # the whole spec names a file: no sampling
    assert len(read_spec(odd + "#9")) == 9  # PATH#N where PATH is that file
    plain = write_jsonl(tmp_path / "c.jsonl", GOOD_ROWS[:2])
    literal = write_jsonl(tmp_path / "c.jsonl#3", GOOD_ROWS[:1])  # both readings exist: the exact name wins, noted
    assert len(read_spec(literal)) == 1 and "reading the file of that name, not 3 rows of" in capsys.readouterr().err
    with pytest.raises(UserError, match=r"c\.jsonl#0: the part after '#' must be a positive number"):
        read_spec(plain + "#0")
    with pytest.raises(UserError, match=r"nope\.jsonl#3: no such file"):
        read_spec(str(tmp_path / "nope.jsonl#3"))
