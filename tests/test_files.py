"""Atomic replacement and the tolerant JSON-lines reader (tunewise.files)."""
import json

import pytest

from tunewise.files import read_jsonl, replace_atomically, write_json_atomic


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "plan.json"
    write_json_atomic(path, {"v": 1})

    def broken(handle):
        handle.write(b'{"v": 2')
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        replace_atomically(path, broken)
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"]


def test_the_log_reader_skips_a_torn_line(tmp_path):
    log = tmp_path / "logging.jsonl"
    log.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo', encoding="utf-8")
    assert [r["step"] for r in read_jsonl(log)] == [1, 2]
    assert read_jsonl(tmp_path / "missing.jsonl") == []
