"""The file layer of training data: a --dataset spec to a file, its bytes to text, the text to (line, JSON value) rows.

Text is UTF-8; a byte-order mark and CRLF (or CR) line ends are accepted. A compressed, UTF-16 or binary file, a byte
that is not UTF-8 and JSON that cannot be read are each a UserError naming the file (and line where there is one).
"""
from __future__ import annotations

import codecs
import json
import random
import re
import sys
from pathlib import Path

from tunewise.errors import UserError

# Magic numbers of archives someone may pass as data; none of them can start a JSON text.
_COMPRESSED = ((b"\x1f\x8b", "gzip"), (b"PK\x03\x04", "zip"), (b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd"))
_JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number",
               type(None): "null"}


def json_type(value) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def show(value, limit: int = 60, quote: bool = True) -> str:
    """A JSON value for an error message: on one line (newlines escaped), cut short; a string in single quotes."""
    text = json.dumps(value, ensure_ascii=False)
    if isinstance(value, str):
        text = f"'{text[1:-1]}'" if quote else text[1:-1]
    return text if len(text) <= limit else text[:limit] + "…"


def _line_of(path: Path, data: bytes, offset: int) -> str:
    newlines = data.count(b"\n", 0, offset)
    return f"{path}:{newlines + 1}"


def read_text(path: Path) -> str:
    """The file as text with '\\n' line ends, or a UserError that says what the file is instead."""
    if path.is_dir():
        raise UserError(f"{path}: is a directory, not a data file (name a .jsonl or .json file).")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot be read ({e.strerror or e}).") from None
    for magic, kind in _COMPRESSED:
        if data.startswith(magic):
            raise UserError(f"{path}: is {kind}-compressed; decompress it and pass the .jsonl or .json file.")
    head = data[:4096]
    bom = head[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
    if bom or head.count(0) * 4 > len(head):  # ASCII in UTF-16 is every other byte NUL: the sign when there is no BOM
        reason = "it starts with a UTF-16 byte-order mark" if bom else "many NUL bytes"
        raise UserError(f"{path}: is UTF-16 ({reason}); save it as UTF-8.")
    data = data.removeprefix(codecs.BOM_UTF8)
    if b"\0" in data:
        raise UserError(f"{_line_of(path, data, data.index(0))}: holds a NUL byte; this is binary data, not JSON text.")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{_line_of(path, data, e.start)}: not UTF-8 text (byte 0x{data[e.start]:02x}); "
                        "save the file as UTF-8.") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")  # a raw CR is never inside a valid JSON string


def _loads(text: str, path: Path, lineno: int | None = None):
    """One JSON value; `lineno` is the line `text` stands on (JSONL), else the error's own line is reported."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        hint = "; a .json file holds one JSON list (use .jsonl for one object per line)" \
            if e.msg == "Extra data" and lineno is None else ""
        raise UserError(f"{path}:{lineno or e.lineno}: not valid JSON ({e.msg}: column {e.colno}){hint}.") from None
    except (RecursionError, ValueError):  # nesting deeper than Python's stack, or an integer over 4300 digits
        where = f"{path}:{lineno}" if lineno else f"{path}"
        raise UserError(f"{where}: JSON too deeply nested, or a number too long, to read.") from None


def rows_of_jsonl(path: Path, text: str):
    for lineno, line in enumerate(text.split("\n"), 1):
        line = line.removeprefix("\ufeff")  # files joined with `cat` keep each one's byte-order mark
        if line.strip():
            yield lineno, _loads(line, path, lineno)


def rows_of_json(path: Path, text: str):
    """A JSON list of rows, each with the line on which it starts."""
    data = _loads(text, path)
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a JSON list of rows, got {json_type(data)} "
                        "(or use .jsonl with one object per line).")
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    lineno = text.count("\n", 0, pos) + 1
    for _ in data:  # parsed once already; decode again piece by piece to learn where each row starts
        start = pos
        while text[pos] in " \t\n,":
            pos += 1
        lineno += text.count("\n", start, pos)
        obj, end = decoder.raw_decode(text, pos)
        yield lineno, obj
        lineno += text.count("\n", pos, end)
        pos = end


def resolve_spec(spec: str, sets: dict) -> tuple[Path, int | None]:
    """(file, rows to sample or None). The whole spec wins when it names a file or a set, so `a#b.jsonl` is a file;
    else `PATH#N` samples N rows of PATH. When both `a.jsonl#3` and `a.jsonl` exist, the exact name is read."""
    def find(name: str) -> Path | None:
        try:
            return sets.get(name) or (Path(name).expanduser() if name else None)
        except RuntimeError:  # ~user of no known home
            return None

    whole = find(spec)
    head, sep, count = spec.rpartition("#")
    part = find(head) if sep else None
    is_count = re.fullmatch(r"[0-9]+", count) is not None and int(count) > 0
    if whole is not None and whole.exists():
        if part is not None and part.is_file() and is_count:
            print(f"note: --dataset {spec}: reading the file of that name, not {count} rows of {head} "
                  "(both exist; rename one to make the other reachable).", file=sys.stderr)
        return whole, None
    if part is not None and part.exists():
        if not is_count:
            raise UserError(f"--dataset {spec}: the part after '#' must be a positive number of rows "
                            "(PATH#N reads N rows of PATH).")
        return part, int(count)
    raise UserError(f"--dataset {spec}: no such file (and not a built-in set: {', '.join(sets)}).")


def read_rows(spec: str, seed: int, sets: dict) -> list[tuple[str, object]]:
    """("file:line", raw row) for every row of one spec: a path, PATH#N (N rows sampled with a fixed seed, repeated
    when N is larger than the file) or the name of a built-in set in `sets`."""
    path, count = resolve_spec(spec, sets)
    text = read_text(path)
    if not text.strip():
        raise UserError(f"{path}: the file is empty.")
    reader = rows_of_json if path.suffix.lower() == ".json" else rows_of_jsonl
    rows = [(f"{path}:{lineno}", row) for lineno, row in reader(path, text)]
    if not rows:
        raise UserError(f"{path}: the file holds no rows.")
    if count is not None:
        rng = random.Random(seed)
        picked = rng.sample(rows, min(count, len(rows)))
        while len(picked) < count:  # upsample: whole extra passes, then a partial one
            picked += rng.sample(rows, min(count - len(picked), len(rows)))
        rows = picked
    return rows
