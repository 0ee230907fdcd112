"""Atomic replacement and the tolerant JSON-lines reader (tunewise.files)."""
import json

import pytest

from tunewise.errors import UserError
from tunewise.files import (json_object, read_json, read_json_object, read_jsonl, replace_atomically,
                            write_json_atomic)


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


def test_the_tolerant_json_reader_gives_the_default_for_a_missing_corrupt_or_undecodable_file(tmp_path):
    path = tmp_path / "record.json"
    assert read_json(path) is None and read_json(path, {}) == {}  # missing
    path.write_text('{"step": 3, "loss": [1.5')  # cut short by a crash
    assert read_json(path) is None and read_json(path, {"x": 1}) == {"x": 1}
    path.write_bytes(b"\xff\xfe{}")  # not UTF-8
    assert read_json(path, []) == []
    assert read_json(tmp_path, 0) == 0  # a folder
    path.write_text(json.dumps({"step": 3, "name": "小黄"}, ensure_ascii=False), encoding="utf-8")
    assert read_json(path) == read_json(str(path), {}) == {"step": 3, "name": "小黄"}
    path.write_text("[1, 2]")
    assert read_json(path, {}) == [1, 2]  # any JSON value: the caller checks its shape


def test_the_strict_json_reader_names_the_file_line_and_column(tmp_path):
    path = tmp_path / "ds.json"
    with pytest.raises(UserError, match=r"^DeepSpeed config .*ds\.json: cannot read it"):
        read_json_object(path, f"DeepSpeed config {path}")
    path.write_text('{\n "zero_optimization": {\n  "stage": 3,\n }\n}')
    with pytest.raises(UserError) as e:
        read_json_object(path)
    assert str(e.value) == (f"{path}: invalid JSON at line 4, column 2: "
                            "Expecting property name enclosed in double quotes.")
    path.write_text("[1]")
    with pytest.raises(UserError, match=r"ds\.json: expected a JSON object, got list\.$"):
        read_json_object(path)
    path.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(UserError, match=r"--fsdp_config x: not UTF-8 text \(invalid start byte at byte 7\)\.$"):
        read_json_object(path, "--fsdp_config x")
    path.write_text('{"stage": 3}')
    assert read_json_object(path) == {"stage": 3}
    assert json_object('{"min_lr_rate": 0.1}', "--lr_scheduler_kwargs") == {"min_lr_rate": 0.1}
    with pytest.raises(UserError, match=r"^--fsdp \(inline JSON\): invalid JSON at line 1, column 2"):
        json_object("{oops}", "--fsdp (inline JSON)")
