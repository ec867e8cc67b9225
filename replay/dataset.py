"""A prepared dataset on disk: its Parquet schemas and its event ids.

Every loader produces *raw* batches (:data:`RAW_SCHEMA`); ``prepare`` cleans them and writes
``<data_dir>/datasets/<name>/events.parquet`` (:data:`EVENTS_SCHEMA`) and, when the dataset
has a catalogue, ``items.parquet`` (:data:`ITEMS_SCHEMA`); ``streamrec.paths`` says where.
The replayer, the archiver and the training code all read these files, so their schemas
are defined once, here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pyarrow as pa

from streams.events import ACTIONS
from streams.log_schema import EVENT_LOG_SCHEMA

# What a loader yields: one row per interaction, before cleaning. `row` is the position of
# the row in the source (line number or generated index); it makes event ids stable even
# when cleaning options change which rows survive.
RAW_SCHEMA = pa.schema(
    [
        pa.field("row", pa.int64(), nullable=False),
        pa.field("event_time", pa.int64(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("action", pa.string(), nullable=False),
        pa.field("rating", pa.float64()),
    ]
)

EVENTS_SCHEMA = EVENT_LOG_SCHEMA

ITEMS_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("title", pa.string()),
        pa.field("categories", pa.list_(pa.string())),
    ]
)

# Bounds of the event contract (streams.events.EventTimeMs): a row outside them is
# malformed at load time rather than rejected later by the replayer.
MIN_EVENT_TIME_MS = 631_152_000_000
MAX_EVENT_TIME_MS = 4_102_444_800_000
MAX_ID_LENGTH = 256
VALID_ACTIONS = frozenset(ACTIONS)


def event_ids(
    name: str,
    rows: Sequence[int],
    users: Sequence[str],
    items: Sequence[str],
    times: Sequence[int],
) -> list[str]:
    """Deterministic event ids: a hash of dataset, source row, user, item and time.

    Re-preparing the same source yields the same ids, so consumers that deduplicate by
    ``event_id`` treat a second replay of the log as the same facts, not new ones.
    """
    prefix = name.encode() + b"\x1f"
    return [
        hashlib.blake2b(
            prefix + f"{row}\x1f{user}\x1f{item}\x1f{time}".encode(), digest_size=16
        ).hexdigest()
        for row, user, item, time in zip(rows, users, items, times, strict=True)
    ]


def empty_raw_table() -> pa.Table:
    return RAW_SCHEMA.empty_table()
