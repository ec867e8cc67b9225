"""Cleaning: rating and time filters, de-duplication (batch and streaming), k-core."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from replay.cleaning import (
    RowFilter,
    StreamDeduper,
    compact,
    duplicate_mask,
    k_core_mask,
    time_order,
)
from replay.dataset import RAW_SCHEMA

T0 = 1_000_000_000_000


def raw(rows: list[tuple], start_row: int = 0) -> pa.Table:
    """(user, item, time offset ms, rating[, action]) tuples as a raw table."""
    return pa.table(
        {
            "row": list(range(start_row, start_row + len(rows))),
            "event_time": [T0 + r[2] for r in rows],
            "user_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "action": [r[4] if len(r) > 4 else "rate" for r in rows],
            "rating": [r[3] for r in rows],
        },
        schema=RAW_SCHEMA,
    )


def test_min_rating_keeps_unrated_events() -> None:
    table = raw(
        [("u", "a", 0, 1.0), ("u", "b", 1, 3.0), ("u", "c", 2, None, "view"), ("u", "d", 3, 4.5)]
    )
    kept, by_rating, by_time = RowFilter(min_rating=3.0).apply(table)
    assert kept.column("item_id").to_pylist() == ["b", "c", "d"]
    assert (by_rating, by_time) == (1, 0)


def test_time_range_is_half_open() -> None:
    table = raw([("u", str(i), i * 10, 3.0) for i in range(6)])
    kept, by_rating, by_time = RowFilter(since_ms=T0 + 10, until_ms=T0 + 40).apply(table)
    assert kept.column("item_id").to_pylist() == ["1", "2", "3"]
    assert (by_rating, by_time) == (0, 3)


def test_duplicates_keep_the_first_row() -> None:
    log = compact(
        [
            raw([("u1", "a", 5, 1.0), ("u2", "a", 5, 2.0), ("u1", "a", 5, 3.0)]),
            raw([("u1", "a", 6, 4.0), ("u1", "a", 5, 5.0)], start_row=3),
        ]
    )
    duplicate = duplicate_mask(log)
    assert duplicate.tolist() == [False, False, True, False, True]
    kept = log.take(np.flatnonzero(~duplicate))
    assert kept.rating.tolist() == [1.0, 2.0, 4.0]


def test_compact_unifies_ids_across_batches() -> None:
    log = compact([raw([("u1", "a", 0, 1.0)]), raw([("u2", "a", 1, 1.0), ("u1", "b", 2, 1.0)])])
    assert len(log.users) == 2 and len(log.items) == 2
    assert log.user[0] == log.user[2] and log.item[0] == log.item[1]
    back = log.to_raw(np.arange(3))
    assert back.column("user_id").to_pylist() == ["u1", "u2", "u1"]
    assert back.column("item_id").to_pylist() == ["a", "a", "b"]


def test_k_core_needs_several_rounds() -> None:
    # k=2. Round 1 drops user d (1 row); then item z has only c: round 2 drops (c, z);
    # then user c has only (c, x): round 3 drops it. a and b with x and y survive.
    log = compact(
        [
            raw(
                [
                    ("a", "x", 0, 1.0),
                    ("a", "y", 1, 1.0),
                    ("b", "x", 2, 1.0),
                    ("b", "y", 3, 1.0),
                    ("c", "x", 4, 1.0),
                    ("c", "z", 5, 1.0),
                    ("d", "z", 6, 1.0),
                ]
            )
        ]
    )
    keep, rounds = k_core_mask(log, 2)
    assert keep.tolist() == [True, True, True, True, False, False, False]
    assert rounds == 3
    keep, rounds = k_core_mask(log, 1)
    assert keep.all() and rounds == 0


def test_time_order_is_stable() -> None:
    log = compact(
        [raw([("u", "a", 5, 1.0), ("u", "b", 1, 1.0), ("u", "c", 5, 1.0), ("u", "d", 1, 1.0)])]
    )
    assert time_order(log).tolist() == [1, 3, 0, 2]


def test_stream_deduper_across_batches() -> None:
    deduper = StreamDeduper()
    first, dropped = deduper.apply(raw([("u1", "a", 4, 1.0), ("u1", "a", 5, 1.0)]))
    assert (first.num_rows, dropped) == (2, 0)
    second, dropped = deduper.apply(
        raw([("u1", "a", 5, 2.0), ("u2", "a", 5, 1.0), ("u2", "a", 5, 1.0), ("u1", "a", 6, 1.0)])
    )
    assert second.column("user_id").to_pylist() == ["u2", "u1"]
    assert dropped == 2
    third, dropped = deduper.apply(raw([("u1", "a", 6, 1.0), ("u2", "a", 6, 1.0)]))
    assert third.column("user_id").to_pylist() == ["u2"]
    assert dropped == 1
