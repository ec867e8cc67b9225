"""Archived-log tables built by hand, for the training-data tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from streams.archiver import CLICK_SCHEMA, INTERACTION_SCHEMA

T0 = 1_700_000_000_000  # epoch ms; every test time is an offset from it


def interactions(rows: Sequence[tuple[str, str, int] | tuple[str, str, int, str]]) -> pa.Table:
    """(user, item, ms after T0[, action]) → an archived-interactions table, time-sorted."""
    records: list[dict[str, Any]] = []
    for offset, row in enumerate(rows):
        user, item, t = row[0], row[1], row[2]
        action = row[3] if len(row) > 3 else "view"
        records.append(
            {
                "event_id": f"e-{user}-{item}-{t}",
                "event_time": T0 + t,
                "user_id": user,
                "item_id": item,
                "action": action,
                "rating": None,
                "source": "replay",
                "kafka_partition": 0,
                "kafka_offset": offset,
            }
        )
    return pa.Table.from_pylist(records, schema=INTERACTION_SCHEMA).sort_by("event_time")


def clicks(rows: Sequence[tuple[str, str, int]]) -> pa.Table:
    records = [
        {
            "event_id": f"c-{user}-{item}-{t}",
            "event_time": T0 + t,
            "user_id": user,
            "request_id": f"r{n}",
            "item_id": item,
            "rank": 1,
            "kafka_partition": 0,
            "kafka_offset": n,
        }
        for n, (user, item, t) in enumerate(rows)
    ]
    return pa.Table.from_pylist(records, schema=CLICK_SCHEMA).sort_by("event_time")
