"""Files a reader never sees half of, and the JSON-lines logs that runs append to.

Every file tunewise rewrites (args.json, plans, plots, reports, the run-directory marker) goes through
`replace_atomically`: written to a temporary file in the same folder, flushed to disk, then renamed over the old one,
so a crash leaves the old file or the new one, never a mix. `read_jsonl` is the one reader of logging.jsonl.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from tunewise.errors import UserError


def replace_atomically(path, write) -> None:
    """Call `write(binary_handle)` on a temporary file beside `path`, then rename it to `path`."""
    directory, name = os.path.split(os.fspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory or ".")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text_atomic(path, text: str) -> None:
    replace_atomically(path, lambda handle: handle.write(text.encode("utf-8")))


def write_json_atomic(path, data) -> None:
    write_text_atomic(path, json.dumps(data, ensure_ascii=False, indent=1) + "\n")


def read_jsonl(path) -> list[dict]:
    """The JSON objects of a JSON-lines file, in order; [] when it does not exist. A line that is not JSON (the last
    one of a log being written, or cut short by a crash or a full disk) is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def check_writable(path: Path, flag: str = "--output_dir") -> None:
    """`path` can be created or written: it is not a file, and its nearest existing folder is writable."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path}: this is a file, not a folder.")
    existing = next(p for p in [path, *path.parents] if p.exists())
    if not existing.is_dir():
        raise UserError(f"{flag} {path}: {existing} is a file, not a folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: {existing} is not writable.")


def listing(folder, skip=(), most: int = 5) -> str:
    """The names in `folder` but those in `skip`, sorted, for a message: the first `most`, then how many more ("" for
    an empty or missing folder)."""
    folder = Path(folder)
    names = sorted(p.name for p in folder.iterdir() if p.name not in skip) if folder.is_dir() else []
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def read_json(path, default=None):
    """The JSON value in `path`, or `default` when the file is missing, unreadable, not UTF-8 or not valid JSON (a
    record cut short by a crash, or one another process is writing): for files whose absence only means "not yet"."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return default


def json_object(text: str, label: str) -> dict:
    """The JSON object `text` holds; a UserError that starts with `label` (what the text is: a flag, a file) and
    names the line and column of invalid JSON, or the type of a value that is not an object."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{label}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}.") from None
    if not isinstance(value, dict):
        raise UserError(f"{label}: expected a JSON object, got {type(value).__name__}.")
    return value


def read_json_object(path, label: str | None = None) -> dict:
    """The JSON object in the file `path`, strictly: a file the user gave that cannot be read, is not UTF-8, is not
    valid JSON or holds no object is a UserError starting with `label` (default: the path)."""
    label = label or str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{label}: not UTF-8 text ({e.reason} at byte {e.start}).") from None
    except OSError as e:
        raise UserError(f"{label}: cannot read it ({e.strerror or e}).") from None
    return json_object(text, label)
