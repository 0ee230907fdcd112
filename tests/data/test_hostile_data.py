"""Hostile data files through the real CLI (`tunewise plan`: cheap, it trains nothing): each is refused with exit
code 2 and one paragraph, `tunewise plan: error: ...`, naming the file (and the line where there is one); no
traceback, and the output directory is never created. Most cases run in-process; a few run as a subprocess."""
import gzip
import io
import json
import subprocess
import sys
import zipfile

import pytest
from cli_runs import run_cli

OK = '{"query": "q", "response": "r"}\n'
DIRECTORY, MISSING = object(), object()


def zipped(text: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("data.jsonl", text)
    return buffer.getvalue()


def row(**fields) -> str:
    return OK + json.dumps(fields, ensure_ascii=False) + "\n"  # the bad row is on line 2


def parquet(rows: list[dict]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    return sink.getvalue().to_pybytes()


def call(name: str, arguments="{}") -> dict:
    return {"role": "assistant", "content": None,
            "tool_calls": [{"type": "function", "function": {"name": name, "arguments": arguments}}]}


USER, ANSWER = {"role": "user", "content": "q"}, {"role": "assistant", "content": "r"}
RESULT = {"role": "tool", "content": "42"}


def turns(*pairs, key="messages") -> str:
    names = ("role", "content") if key == "messages" else ("from", "value")
    return row(**{key: [dict(zip(names, pair)) for pair in pairs]})


# (id, file name, content, line named in the message or None, a fragment of the message, extra flags)
CASES = [
    ("empty-file", "d.jsonl", b"", None, "the file is empty"),
    ("blank-lines-only", "d.jsonl", "\n  \n\r\n", None, "the file is empty"),
    ("empty-json-list", "d.json", "[]", None, "holds no rows"),
    ("truncated-line", "d.jsonl", OK + '{"query": "a", "resp', 2, "not valid JSON"),
    ("truncated-json-list", "d.json", '[\n  {"query": "a", "response": "b"},\n  {"query": ', 3, "not valid JSON"),
    ("json-object-not-list", "d.json", OK, None, "expected a JSON list of rows, got object"),
    ("jsonl-in-a-json-file", "d.json", OK + OK, 2, "a .json file holds one JSON list"),
    ("row-is-array", "d.jsonl", OK + '["q", "r"]\n', 2, "expected a JSON object, got array"),
    ("row-is-string", "d.jsonl", OK + '"q"\n', 2, "expected a JSON object, got string"),
    ("row-is-null", "d.jsonl", OK + "null\n", 2, "expected a JSON object, got null"),
    ("row-is-number", "d.jsonl", OK + "42\n", 2, "expected a JSON object, got number"),
    ("no-known-field", "d.jsonl", row(text="q"), 2, "missing field 'query'"),
    ("query-number", "d.jsonl", row(query=1, response="r"), 2, "field 'query' must be a string, got number"),
    ("response-null", "d.jsonl", row(query="q", response=None), 2, "field 'response' must be a string, got null"),
    ("response-object", "d.jsonl", row(query="q", response={"text": "r"}), 2, "field 'response' must be a string"),
    ("system-number", "d.jsonl", row(query="q", response="r", system=3), 2, "field 'system' must be a string"),
    ("input-list", "d.jsonl", row(instruction="q", input=["x"], output="r"), 2, "field 'input' must be a string"),
    ("history-string", "d.jsonl", row(query="q", response="r", history="q0"), 2, "field 'history' must be a list"),
    ("history-triple", "d.jsonl", row(query="q", response="r", history=[["a", "b", "c"]]), 2,
     "history[0] must be a [query, response] pair"),
    ("history-reply-number", "d.jsonl", row(query="q", response="r", history=[["a", 1]]), 2,
     "field 'history[0][1]' must be a string"),
    ("messages-string", "d.jsonl", row(messages="hi"), 2, "field 'messages' must be a non-empty list"),
    ("messages-empty", "d.jsonl", row(messages=[]), 2, "field 'messages' must be a non-empty list"),
    ("message-without-role", "d.jsonl", row(messages=[{"content": "q"}]), 2, "messages[0] needs 'role' and 'content'"),
    ("message-role-unknown", "d.jsonl", turns(("user", "q"), ("bot", "r")), 2, "messages[1].role is 'bot'"),
    ("message-role-null", "d.jsonl", turns(("user", "q"), (None, "r")), 2, "messages[1].role is null"),
    ("message-content-null", "d.jsonl", turns(("user", None), ("assistant", "r")), 2,
     "field 'messages[0].content' must be a string, got null"),
    ("message-content-list", "d.jsonl", turns(("user", [{"type": "text", "text": "q"}]), ("assistant", "r")), 2,
     "got array"),
    ("two-user-turns", "d.jsonl", turns(("user", "a"), ("user", "b"), ("assistant", "r")), 2,
     "messages must alternate user/assistant; message 2 is 'user'"),
    ("assistant-first", "d.jsonl", turns(("assistant", "r"), ("user", "q"), ("assistant", "r")), 2,
     "message 1 is 'assistant'"),
    ("ends-with-user", "d.jsonl", turns(("user", "q"), ("assistant", "r"), ("user", "q")), 2,
     "must end with an assistant reply"),
    ("system-not-first", "d.jsonl", turns(("user", "q"), ("system", "s"), ("assistant", "r")), 2,
     "a system message may only come first"),
    ("system-only", "d.jsonl", turns(("system", "s")), 2, "must end with an assistant reply"),
    ("empty-reply", "d.jsonl", row(query="q", response=""), 2, "field 'response' is empty"),
    ("whitespace-reply", "d.jsonl", turns(("user", "q"), ("assistant", " \n\t ")), 2,
     "field 'messages[1].content' is empty"),
    ("alpaca-empty-prompt", "d.jsonl", row(instruction="", input="", output="r"), 2,
     "fields 'instruction' and 'input' are empty"),
    ("sharegpt-unknown-from", "d.jsonl", turns(("human", "q"), ("bot", "r"), key="conversations"), 2,
     "conversations[1].from is 'bot'"),
    ("sharegpt-function-call-not-json", "d.jsonl", turns(("human", "q"), ("function_call", "r"), key="conversations"),
     2, "field 'conversations[1].value' is a string that is not valid JSON"),
    ("tool-calls-number", "d.jsonl", row(messages=[USER, {"role": "assistant", "tool_calls": 5}]), 2,
     "field 'messages[1].tool_calls' must be a non-empty list of tool calls"),
    ("tool-call-no-name", "d.jsonl", row(messages=[USER, {"role": "assistant", "tool_calls": [{"function": {}}]}]), 2,
     "messages[1].tool_calls[0] needs 'name'"),
    ("tool-call-arguments-list", "d.jsonl", row(messages=[USER, call("f", "[1]")]), 2,
     "field 'messages[1].tool_calls[0].arguments' must be an object (or a JSON string of one), got array"),
    ("tool-call-on-user-turn", "d.jsonl", row(messages=[{**USER, "tool_calls": []}, ANSWER]), 2,
     "messages[0] has 'tool_calls' but role 'user'"),
    ("tool-result-without-call", "d.jsonl", row(messages=[USER, ANSWER, RESULT, ANSWER]), 2,
     "message 3 is a tool result, but message 2 made no tool call"),
    ("tool-call-without-result", "d.jsonl", row(messages=[USER, call("f"), USER, ANSWER]), 2,
     "message 3 is 'user'; the tool calls of message 2 need their result (a 'tool' turn) first"),
    ("tool-not-listed", "d.jsonl", row(messages=[USER, call("g"), RESULT, ANSWER], tools=[{"name": "f"}]), 2,
     "message 2 calls the tool 'g', which field 'tools' does not list (it lists f)"),
    ("tools-an-object", "d.jsonl", row(messages=[USER, ANSWER], tools='{"name": "f"}'), 2,
     "field 'tools' must be a list of function schemas, got object"),
    ("tools-on-a-template-without-them", "d.jsonl", row(messages=[USER, call("f"), RESULT, ANSWER]), 2,
     "the model's chat template does not render tools: the assistant's call of f is missing"),
    ("dpo-tools", "d.jsonl", json.dumps({"prompt": "q", "chosen": "r", "rejected": "s", "tools": [{"name": "f"}]}),
     1, "tool calls and tools in preference rows are not supported by dpo yet", ["--rlhf_type", "dpo"]),
    ("csv-extra-cell", "d.csv", 'query,response\nq,"r\nr"\nq,r,x\n', 4, "3 cells, but the header has 2 columns"),
    ("csv-empty-reply", "d.csv", "query,response\nq,r\nq,\n", 3, "missing field 'response'"),
    ("csv-blank-reply", "d.csv", "query,response\nq,r\nq, \n", 3, "field 'response' is empty"),
    ("csv-messages-not-json", "d.csv", 'messages\n"[{""role"": ""user""}"\n', 2,
     "column 'messages' holds text that is not valid JSON"),
    ("csv-header-twice", "d.csv", "query,query\nq,r\n", 1, "column 'query' appears twice in the header"),
    ("csv-utf16", "d.csv", "query,response\nq,r\n".encode("utf-16"), None, "is UTF-16"),
    ("parquet-not-parquet", "d.parquet", OK, None, "not a readable Parquet file"),
    ("parquet-empty", "d.parquet", b"", None, "the file is empty"),
    ("parquet-no-reply", "d.parquet", parquet([{"query": "q", "response": "r"}, {"query": "q", "response": None}]),
     None, "d.parquet, row 2: missing field 'response'"),
    ("parquet-reply-number", "d.parquet", parquet([{"query": "q", "response": 1}]), None,
     "d.parquet, row 1: field 'response' must be a string, got number"),
    ("sharegpt-no-value", "d.jsonl", row(conversations=[{"from": "human"}]), 2,
     "conversations[0] needs 'from' and 'value'"),
    ("sharegpt-value-number", "d.jsonl", turns(("human", "q"), ("gpt", 7), key="conversations"), 2,
     "field 'conversations[1].value' must be a string, got number"),
    ("placeholder-left", "d.jsonl", row(query="who", response="I am {{NAME}}."), 2,
     "still holds the placeholder {{NAME}} (set --model_name and --model_author)"),
    ("unknown-placeholder", "d.jsonl", row(query="who", response="I am {{TEAM}}."), 2, "placeholder {{TEAM}}"),
    ("gzip", "d.jsonl", gzip.compress(OK.encode(), mtime=0), None, "is gzip-compressed; decompress it"),
    ("zip", "d.jsonl", zipped(OK), None, "is zip-compressed"),
    ("utf16-bom", "d.jsonl", OK.encode("utf-16"), None, "is UTF-16"),
    ("utf16-no-bom", "d.json", f"[{OK}]".encode("utf-16-le"), None, "is UTF-16"),
    ("latin1-byte", "d.jsonl", OK.encode() + '{"query": "café", "response": "r"}\n'.encode("latin-1"), 2,
     "not UTF-8 text (byte 0xe9)"),
    ("binary-junk", "d.jsonl", bytes(range(1, 256)) * 8, 2, "not UTF-8 text (byte 0x80)"),
    ("nul-byte", "d.jsonl", OK.encode() + b'{"query": "q\x00"}\n', 2, "holds a NUL byte"),
    ("a-directory", "d.jsonl", DIRECTORY, None, "is a directory, not a data file"),
    ("missing-file", "d.jsonl", MISSING, None, "no such file"),
    ("huge-line", "d.jsonl", row(query="x" * 3_000_000, response=["r"]), 2, "field 'response' must be a string"),
    ("huge-role", "d.jsonl", turns(("user\n" * 100_000, "q"), ("assistant", "r")), 2, "messages[0].role is 'user\\n"),
    ("deep-nesting", "d.jsonl", OK + "[" * 200_000 + "\n", 2, "too deeply nested"),
    ("huge-integer", "d.jsonl", OK + '{"query": ' + "9" * 5000 + "}\n", 2, "a number too long"),
    ("dpo-no-rejected", "d.jsonl", OK.replace("query", "prompt").replace("response", "chosen"), 1,
     "missing field 'rejected'", ["--rlhf_type", "dpo"]),
    ("dpo-identical", "d.jsonl", '{"prompt": "q", "chosen": "r", "rejected": "r"}\n', 1,
     "the chosen and rejected replies are identical", ["--rlhf_type", "dpo"]),
    ("dpo-empty-rejected", "d.jsonl", '{"prompt": "q", "chosen": "r", "rejected": "  "}\n', 1,
     "the rejected reply is empty", ["--rlhf_type", "dpo"]),
    ("dpo-sharegpt-chosen-human", "d.jsonl", json.dumps({
        "conversations": [{"from": "human", "value": "q"}], "chosen": {"from": "human", "value": "r"},
        "rejected": {"from": "gpt", "value": "s"}}), 1, "field 'chosen' must be the assistant's turn",
     ["--rlhf_type", "dpo"]),
]


def make(tmp_path, name, content):
    path = tmp_path / name
    if content is DIRECTORY:
        path.mkdir()
    elif content is not MISSING:
        path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def check_refusal(err: str, path, line, fragment, out):
    assert "Traceback" not in err
    assert err.startswith("tunewise plan: error: ") and err.endswith("\n") and err.count("\n") == 1, err[:500]
    assert (f"{path}:{line}: " if line else str(path)) in err, err
    assert fragment in err, err
    assert len(err) < 400 + len(str(path)), "the message quotes too much of the file"
    assert not out.exists()


@pytest.mark.parametrize("name, content, line, fragment, flags",
                         [pytest.param(*case[1:5], case[5] if len(case) > 5 else [], id=case[0]) for case in CASES])
def test_hostile_file_is_refused_with_one_paragraph(tmp_path, capsys, name, content, line, fragment, flags):
    path, out = make(tmp_path, name, content), tmp_path / "out"
    assert run_cli("plan", "--dataset", path, "--output_dir", out, *flags) == 2
    check_refusal(capsys.readouterr().err, path, line, fragment, out)


def test_there_are_at_least_thirty_cases():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)


def test_a_sample_count_that_is_no_number_is_refused(tmp_path, capsys):
    path, out = make(tmp_path, "d.jsonl", OK), tmp_path / "out"
    assert run_cli("plan", "--dataset", f"{path}#0", "--output_dir", out) == 2
    check_refusal(capsys.readouterr().err, path, None, "the part after '#' must be a positive number", out)


@pytest.mark.parametrize("case", ["binary-junk", "deep-nesting", "a-directory"])
def test_in_a_subprocess_there_is_no_traceback(tmp_path, case):
    _, name, content, line, fragment = next(c for c in CASES if c[0] == case)
    path, out = make(tmp_path, name, content), tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "tunewise.cli", "plan", "--dataset", str(path),
                           "--output_dir", str(out)], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    check_refusal(proc.stderr, path, line, fragment, out)
