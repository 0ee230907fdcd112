"""Every kind of --dataset source as (where, raw row) pairs: JSONL and JSON files (readers.py), CSV and Parquet files
(tables.py), dataset folders and Hub ids (hub.py), and the built-in sets; `SPEC#N` samples the same way for all.
"""
from __future__ import annotations

from tunewise.data.readers import file_rows, resolve_spec, sample_indices
from tunewise.errors import UserError


def read_rows(spec: str, seed: int, sets: dict) -> list[tuple[str, object]]:
    """(where, raw row) for every row of one spec: a file (JSONL, JSON, CSV, Parquet), a dataset folder, a Hub id,
    or the name of a built-in set in `sets`; `SPEC#N` samples N rows with a fixed seed (repeated when N is larger
    than the data). `where` is "file:line", or "file, row N" where there are no lines."""
    source = resolve_spec(spec, sets)
    if source.kind != "file":
        from tunewise.data import hub  # imports `datasets`: only for the sources that need it

        return hub.dataset_rows(source, seed)
    path = source.location
    suffix = path.suffix.lower()
    if suffix in (".csv", ".parquet"):
        from tunewise.data import tables

        rows = tables.csv_rows(path) if suffix == ".csv" else tables.parquet_rows(path)
    else:
        rows = file_rows(path)
    if not rows:
        raise UserError(f"{path}: the file holds no rows.")
    if source.count is not None:
        rows = [rows[i] for i in sample_indices(len(rows), source.count, seed)]
    return rows
