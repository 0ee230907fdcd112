"""CSV and Parquet files as rows of training data, and the clean-up every tabular row gets (these files, and the
datasets hub.py loads).

A table has one column per field of the JSON forms (formats.py): query/response, instruction/input/output, system,
messages, conversations, tools, ... A `messages`, `conversations`, `history` or `tools` cell may hold the JSON text
of its list (a CSV cell always does). An empty cell and a null cell are an absent field, so one table may mix the
forms (a row of query/response leaves the instruction/output cells empty). Arrow gives every struct in a column the
union of their keys, null where a row had none, so nulls inside nested values are dropped too (store tool-call
arguments as JSON text where a null argument matters: JSON text is read as written).
CSV rows are named by the line they start on (`file:line`), Parquet rows by their 1-based number (`file, row N`).
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from tunewise.data.readers import read_text
from tunewise.errors import UserError, brief

JSON_COLUMNS = ("messages", "conversations", "history", "tools")


def _without_nulls(value):
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def table_row(row: dict, where: str) -> dict:
    """A row of a table or dataset in the form of a JSON row: null and empty cells dropped, nulls inside nested
    values dropped, JSON text in JSON_COLUMNS read."""
    row = {key: value for key, value in _without_nulls(row).items() if value != ""}
    for key in JSON_COLUMNS:
        value = row.get(key)
        if not isinstance(value, str):
            continue
        if not value.strip():
            del row[key]
            continue
        try:
            row[key] = json.loads(value)
        except json.JSONDecodeError as e:
            raise UserError(f"{where}: column '{key}' holds text that is not valid JSON ({e.msg}: column {e.colno}); "
                            f"a '{key}' cell holds the JSON of its list.") from None
        except (RecursionError, ValueError):
            raise UserError(f"{where}: column '{key}' holds JSON too deeply nested, or a number too long, to read.") \
                from None
    return row


def csv_rows(path: Path) -> list[tuple[str, dict]]:
    """("file:line", row) for every record of a CSV file with a header line; a record spanning lines (a quoted
    newline) is named by its first line."""
    text = read_text(path)  # UTF-8 (a byte-order mark and CRLF are fine), or the error that says what it is
    if not text.strip():
        raise UserError(f"{path}: the file is empty.")
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))  # a conversation in one cell outgrows 128 KiB
    reader = csv.reader(io.StringIO(text))
    header, rows, line = None, [], 1
    try:
        for cells in reader:
            start, line = line, reader.line_num + 1
            if len(cells) <= 1 and not "".join(cells).strip():  # a blank line (a row of empty cells is a row)
                continue
            if header is None:
                header = [cell.strip() for cell in cells]
                blank = next((i for i, name in enumerate(header) if not name), None)
                if blank is not None:
                    raise UserError(f"{path}:{start}: column {blank + 1} of the header has no name.")
                twice = next((name for i, name in enumerate(header) if name in header[:i]), None)
                if twice:
                    raise UserError(f"{path}:{start}: column '{twice}' appears twice in the header.")
                continue
            if len(cells) != len(header):
                raise UserError(f"{path}:{start}: {len(cells)} cell{'s' * (len(cells) != 1)}, but the header has "
                                f"{len(header)} columns "
                                "(a cell holding a comma or a newline must be in double quotes).")
            where = f"{path}:{start}"
            rows.append((where, table_row(dict(zip(header, cells)), where)))
    except csv.Error as e:
        raise UserError(f"{path}:{reader.line_num}: not valid CSV ({e}).") from None
    if header is None:
        raise UserError(f"{path}: the file is empty.")
    return rows


def parquet_rows(path: Path) -> list[tuple[str, dict]]:
    """("file, row N", row) for every row of a Parquet file, read with pyarrow."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if path.stat().st_size == 0:
            raise UserError(f"{path}: the file is empty.")
        table = pq.ParquetFile(path)
        rows = []
        for batch in table.iter_batches(batch_size=4096):
            for row in batch.to_pylist():
                where = f"{path}, row {len(rows) + 1}"
                rows.append((where, table_row(row, where)))
    except OSError as e:
        raise UserError(f"{path}: cannot be read ({e.strerror or e}).") from None
    except (pa.ArrowException, ValueError) as e:
        raise UserError(f"{path}: not a readable Parquet file ({brief(e, 200)}).") from None
    return rows
