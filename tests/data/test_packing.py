"""--packing: every row lands in exactly one pack of at most max_length tokens, packs are full, the result is
deterministic, and a pack unpacks into its rows with the first label of each row not trained."""
import random

from tunewise.data.packing import pack_rows, summary, unpack


def rows_of(lengths):
    return [{"input_ids": [i * 1000 + t for t in range(n)], "labels": [-100] * (n // 2) + [i] * (n - n // 2)}
            for i, n in enumerate(lengths)]


def test_every_row_once_and_no_pack_over_the_limit():
    rng = random.Random(0)
    lengths = [rng.randint(5, 400) for _ in range(300)]
    rows = rows_of(lengths)
    packs = pack_rows(rows, 512)
    assert all(len(p["input_ids"]) <= 512 and sum(p["lengths"]) == len(p["input_ids"]) for p in packs)
    unpacked = unpack(packs)
    assert sorted(r["input_ids"][0] for r in unpacked) == sorted(r["input_ids"][0] for r in rows)
    assert sum(map(len, (r["input_ids"] for r in unpacked))) == sum(lengths)
    # best-fit decreasing needs at most 11/9 of the fewest packs possible (+1), and no fewer than this lower bound:
    # all tokens in full packs, and one pack for each row over half the limit
    fewest = max(-(-sum(lengths) // 512), sum(n > 256 for n in lengths))
    assert fewest <= len(packs) <= 11 / 9 * fewest + 1, (len(packs), fewest)
    assert pack_rows(rows, 512) == packs  # deterministic
    assert summary(len(rows), packs, 512).startswith("packing: 300 rows into ")


def test_a_pack_keeps_its_rows_apart():
    rows = rows_of([6, 4, 5])
    [pack] = pack_rows(rows, 64)
    assert pack["lengths"] == [6, 5, 4]  # longest first
    back = {r["input_ids"][0]: r for r in unpack([pack])}
    for row in rows:
        again = back[row["input_ids"][0]]
        assert again["input_ids"] == row["input_ids"]
        assert again["labels"] == [-100] + row["labels"][1:]  # the row before never predicts a row's first token


def test_a_row_of_exactly_max_length_fills_its_own_pack():
    packs = pack_rows(rows_of([8, 3, 5]), 8)
    assert [p["lengths"] for p in packs] == [[8], [5, 3]]
