"""The file layer of training data: a --dataset spec to a Source, a JSON file's bytes to text, the text to (line, JSON
value) rows. sources.read_rows reads every kind of source: JSON here, CSV and Parquet in tables.py, dataset folders
and Hub ids in hub.py (through `datasets`).

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
from typing import NamedTuple

from tunewise.errors import UserError

# Magic numbers of archives someone may pass as data; none of them can start a JSON text.
_COMPRESSED = ((b"\x1f\x8b", "gzip"), (b"PK\x03\x04", "zip"), (b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd"))
_JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number",
               type(None): "null"}


def json_type(value) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def show(value, limit: int = 60, quote: bool = True) -> str:
    """A JSON value for an error message: on one line (newlines escaped), cut short; a string in single quotes."""
    text = json.dumps(value, ensure_ascii=False, default=str)  # a table's cell may hold bytes or a date
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
        raise UserError(f"{_line_of(path, data, data.index(0))}: holds a NUL byte; this is binary data, not text.")
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


class Source(NamedTuple):
    """What a --dataset spec names: a data file, a folder (saved by `datasets`, or of data files) or a Hub dataset id,
    and how many rows to sample from it (None: all, in order)."""
    kind: str  # "file" | "folder" | "hub"
    location: Path | str
    count: int | None
    spec: str


_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


def is_hub_id(name: str) -> bool:
    """`owner/name` as the Hub spells dataset ids, and not a local path that is missing (a data-file suffix, or an
    existing folder as its first part: `data/train.jsonl`)."""
    return (_HUB_ID.fullmatch(name) is not None and not name.lower().endswith(DATA_SUFFIXES)
            and not Path(name.partition("/")[0]).is_dir())


def resolve_spec(spec: str, sets: dict) -> Source:
    """The whole spec wins when it names a file, folder or set, so `a#b.jsonl` is a file; else `PATH#N` samples N rows
    of PATH. When both `a.jsonl#3` and `a.jsonl` exist, the exact name is read. A spec that names nothing local and is
    spelt `owner/name[#N]` is a Hub dataset id."""
    def find(name: str) -> Path | None:
        try:
            return sets.get(name) or (Path(name).expanduser() if name else None)
        except RuntimeError:  # ~user of no known home
            return None

    def local(path: Path, count: int | None) -> Source:
        return Source("folder" if path.is_dir() else "file", path, count, spec)

    whole = find(spec)
    head, sep, count = spec.rpartition("#")
    part = find(head) if sep else None
    is_count = re.fullmatch(r"[0-9]+", count) is not None and int(count) > 0
    if whole is not None and whole.exists():
        if part is not None and part.exists() and is_count:
            print(f"note: --dataset {spec}: reading the {'file' if whole.is_file() else 'folder'} of that name, not "
                  f"{count} rows of {head} (both exist; rename one to make the other reachable).", file=sys.stderr)
        return local(whole, None)
    name = head if sep else spec
    if (part is not None and part.exists()) or is_hub_id(name):
        if sep and not is_count:
            raise UserError(f"--dataset {spec}: the part after '#' must be a positive number of rows "
                            "(PATH#N reads N rows of PATH).")
        count = int(count) if sep else None
        return local(part, count) if part is not None and part.exists() else Source("hub", name, count, spec)
    raise UserError(f"--dataset {spec}: no such file (and not a built-in set: {', '.join(sets)}; "
                    "a Hub dataset id is spelt owner/name).")


def sample_indices(n: int, count: int, seed: int) -> list[int]:
    """The rows `PATH#count` reads of n, for every kind of source: `count` drawn without repeats (seeded), whole extra
    passes and then a partial one when count > n."""
    rng = random.Random(seed)
    picked = rng.sample(range(n), min(count, n))
    while len(picked) < count:
        picked += rng.sample(range(n), min(count - len(picked), n))
    return picked


def file_rows(path: Path) -> list[tuple[str, object]]:
    """("file:line", raw row) for every row of a .jsonl or .json file."""
    text = read_text(path)
    if not text.strip():
        raise UserError(f"{path}: the file is empty.")
    reader = rows_of_json if path.suffix.lower() == ".json" else rows_of_jsonl
    return [(f"{path}:{lineno}", row) for lineno, row in reader(path, text)]
