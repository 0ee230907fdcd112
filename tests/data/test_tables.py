"""tunewise.data.tables: CSV and Parquet files map their columns to the JSON row forms, name a bad CSV row by its
line and a bad Parquet row by its number, read JSON-text cells of the list columns, and drop Arrow's nulls."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tunewise.data.formats import load_conversations
from tunewise.data.preference import load_preferences
from tunewise.data.tables import table_row
from tunewise.errors import UserError

ROWS = [
    {"query": "q2", "response": "r2", "system": "sys", "history": [["q1", "r1"]]},
    {"instruction": "do", "input": "this", "output": "done"},
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
    {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]},
]
CALL_ROW = {"tools": json.dumps([{"name": "f", "parameters": {"type": "object"}}]), "messages": [
    {"role": "user", "content": "call f"},
    {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {
        "name": "f", "arguments": json.dumps({"x": 1})}}]},
    {"role": "tool", "content": "ok"},
    {"role": "assistant", "content": "done"}]}


def write_csv(path, header, *records):
    def cell(value):
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        return '"' + text.replace('"', '""') + '"'
    path.write_text(",".join(header) + "\n" + "".join(",".join(cell(r.get(h, "")) for h in header) + "\n"
                                                      for r in records), encoding="utf-8")
    return str(path)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def messages(specs):
    return [c.messages for c in load_conversations(specs)]


def test_csv_columns_map_to_every_row_form(tmp_path):
    header = ["query", "response", "system", "history", "instruction", "input", "output", "messages", "conversations"]
    jsonl = write_jsonl(tmp_path / "d.jsonl", ROWS)
    assert messages([write_csv(tmp_path / "d.csv", header, *ROWS)]) == messages([jsonl])


def table(rows) -> pa.Table:
    """Rows as Arrow makes them: a column for every key of any row, null where a row has none."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return pa.table({k: [r.get(k) for r in rows] for k in keys})


def test_parquet_columns_map_to_every_row_form(tmp_path):
    path = tmp_path / "d.parquet"
    pq.write_table(table(ROWS), path)  # nested columns: list<struct> with the union of the keys
    assert messages([str(path)]) == messages([write_jsonl(tmp_path / "d.jsonl", ROWS)])


def test_tool_calls_come_through_parquet_and_csv(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(table([CALL_ROW, ROWS[2]]), path)  # structs: content and tool_calls null where absent
    csv_path = write_csv(tmp_path / "t.csv", ["tools", "messages"], CALL_ROW, ROWS[2])
    expected = load_conversations([write_jsonl(tmp_path / "t.jsonl", [CALL_ROW, ROWS[2]])])
    for spec in (str(path), csv_path):
        convs = load_conversations([spec])
        assert [c.messages for c in convs] == [c.messages for c in expected]
        tools = [{"type": "function", "function": json.loads(CALL_ROW["tools"])[0]}]
        assert convs[0].tools == expected[0].tools == tools
        assert convs[1].tools is None and "tool_calls" not in convs[1].messages[1]


def test_a_csv_row_is_named_by_the_line_it_starts_on(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('query,response\nq,"two\nlines"\n\n"multi\nline\nquery",r\n', encoding="utf-8")
    assert [c.origin.rpartition(":")[2] for c in load_conversations([str(path)])] == ["2", "5"]
    path.write_text(path.read_text() + '"q\n",\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"d\.csv:8: missing field 'response'"):
        load_conversations([str(path)])


def test_csv_cells_are_text_and_an_empty_cell_is_absent(tmp_path):
    rows = [{"query": "1", "response": "2"}, {"input": "only the input", "output": "ok"}]
    path = write_csv(tmp_path / "d.csv", ["query", "response", "history", "instruction", "input", "output"], *rows)
    assert messages([path]) == [[{"role": "user", "content": "1"}, {"role": "assistant", "content": "2"}],
                                [{"role": "user", "content": "only the input"}, {"role": "assistant", "content": "ok"}]]


def test_a_parquet_row_is_named_by_its_number(tmp_path):
    path = tmp_path / "d.parquet"
    pq.write_table(table([ROWS[2], {"messages": [{"role": "user", "content": "x"}]}]), path)
    with pytest.raises(UserError, match=r"d\.parquet, row 2: missing field 'response'"):
        load_conversations([str(path)])


def test_a_parquet_cell_of_bytes_is_named_in_the_error(tmp_path):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"query": [b"q"], "response": ["r"]}), path)
    with pytest.raises(UserError, match=r"d\.parquet, row 1: field 'query' must be a string, got bytes"):
        load_conversations([str(path)])


def test_table_rows_drop_nulls_and_empty_cells_and_read_json_text():
    row = {"query": None, "input": "", "system": " ", "tools": " ", "conversations": [{"from": "human", "x": None}],
           "messages": '[{"role": "user", "content": "a", "tool_calls": null}]'}
    assert table_row(row, "x") == {"system": " ", "conversations": [{"from": "human"}],
                                   "messages": [{"role": "user", "content": "a", "tool_calls": None}]}
    with pytest.raises(UserError, match=r"x: column 'history' holds text that is not valid JSON"):
        table_row({"history": "[[1, 2]"}, "x")


def test_preference_pairs_from_a_csv(tmp_path):
    path = write_csv(tmp_path / "p.csv", ["prompt", "chosen", "rejected"],
                     {"prompt": "q", "chosen": "a", "rejected": "b"})
    (pair,) = load_preferences([path])
    assert pair.messages[-1]["content"] == "a" and pair.extra["rejected_response"] == "b" and pair.origin.endswith(":2")
