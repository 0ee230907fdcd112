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


def test_listing_names_a_folders_files_for_a_message(tmp_path):
    from tunewise.files import listing

    assert listing(tmp_path / "missing") == "" and listing(tmp_path) == ""
    for k in range(7):
        (tmp_path / f"f{k}").write_text("")
    assert listing(tmp_path) == "f0, f1, f2, f3, f4 and 2 more"
    assert listing(tmp_path, skip=("f0", "f1")) == "f2, f3, f4, f5, f6"
