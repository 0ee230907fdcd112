"""--packing: encoded rows grouped into sequences of at most --max_length tokens before training (ms-swift's and
TRL's packing), so every training sample holds about the same number of tokens.

A pack keeps its rows apart: it records their lengths, and the padding-free collator (tunewise.train.batches) gives
each row position_ids from 0 and -100 as its first label, so no row attends to or predicts across another. The loss
is normalised per trained token as without packing; what changes is which rows share an optimizer step, and how many
samples the plan counts (packs, not rows).
"""
from __future__ import annotations

import bisect

from tunewise.data.encode import IGNORE


def pack_rows(rows: list[dict], max_length: int) -> list[dict]:
    """Best-fit decreasing: the longest rows first, each into the fullest pack it still fits. Deterministic (ties
    keep the rows' order). A pack is {"input_ids", "labels", "lengths"} with its rows in the order they were added."""
    order = sorted(range(len(rows)), key=lambda i: (-len(rows[i]["input_ids"]), i))
    members: list[list[int]] = []
    room: list[tuple[int, int]] = []  # (free tokens, pack index), sorted
    for i in order:
        n = len(rows[i]["input_ids"])
        at = bisect.bisect_left(room, (n, -1))  # the pack with the least room that still fits n tokens
        if at < len(room):
            free, pack = room.pop(at)
        else:
            free, pack = max_length, len(members)
            members.append([])
        members[pack].append(i)
        if free - n > 0:
            bisect.insort(room, (free - n, pack))
    return [join([rows[i] for i in pack]) for pack in members]


def join(rows: list[dict]) -> dict:
    input_ids, labels = [], []
    for row in rows:
        input_ids += row["input_ids"]
        labels += [IGNORE] + list(row["labels"][1:])  # nothing predicts a row's first token from the row before
    return {"input_ids": input_ids, "labels": labels, "lengths": [len(r["input_ids"]) for r in rows]}


def unpack(features: list[dict]) -> list[dict]:
    """The rows of a batch of packs (plain rows pass through), for the padding-free collator."""
    rows = []
    for feature in features:
        start = 0
        for n in feature.get("lengths") or [len(feature["input_ids"])]:
            rows.append({"input_ids": feature["input_ids"][start:start + n], "labels": feature["labels"][start:start + n]})
            start += n
    return rows


def summary(rows: int, packs: list[dict], max_length: int) -> str:
    tokens = sum(len(p["input_ids"]) for p in packs)
    return (f"packing: {rows:,} rows into {len(packs):,} sequences of at most {max_length:,} tokens "
            f"({tokens / (len(packs) * max_length):.0%} full)")
