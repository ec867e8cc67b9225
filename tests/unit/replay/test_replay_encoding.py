"""The replayer's batch encoder against the contract's encoder, byte for byte."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from replay.dataset import EVENTS_SCHEMA
from replay.encoding import (
    REBASE_NAMESPACE,
    RecordRejected,
    encode_rows,
    rebased_id,
)
from replay.prepare import prepare
from streamrec.settings import Settings
from streams.events import ID_MAX_CHARS, Interaction, encode

T0 = 1_000_000_000_000


def contract(row: dict[str, Any], offset_ms: int = 0) -> tuple[bytes, bytes]:
    """What the replayer sent before: one validated Interaction through ``encode``."""
    event_id = row["event_id"]
    if offset_ms:
        event_id = uuid.uuid5(REBASE_NAMESPACE, f"{event_id}@{offset_ms}").hex
    event = Interaction.model_validate(
        {
            **row,
            "event_id": event_id,
            "event_time": row["event_time"] + offset_ms,
            "source": "replay",
        }
    )
    return encode(event)


def batch_of(rows: list[dict[str, Any]], schema: pa.Schema = EVENTS_SCHEMA) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist(rows, schema=schema)


def row(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": "e1",
        "event_time": T0,
        "user_id": "u1",
        "item_id": "i1",
        "action": "rate",
        "rating": 4.0,
    }
    return {**base, **fields}


def assert_same_bytes(rows: list[dict[str, Any]], offset_ms: int = 0, **kw: Any) -> None:
    records = encode_rows(batch_of(rows, **kw), offset_ms=offset_ms)
    expected = [contract(r, offset_ms) for r in rows]
    assert list(zip(records.keys, records.values, strict=True)) == expected


def test_a_prepared_log_encodes_byte_for_byte(settings: Settings, fixtures: Path) -> None:
    for source in (
        f"movielens-100k:{fixtures / 'movielens' / 'grouplens'}",
        f"amazon-books:{fixtures / 'amazon' / 'reviews_2018.json'}",
        "synthetic:users=50,items=40,events=2000,seed=3",
    ):
        report = prepare(settings, source)
        rows = pq.read_table(report.events_path).to_pylist()
        assert len(rows) > 5
        assert_same_bytes(rows)


@pytest.mark.parametrize(
    "rating",
    [None, 0.0, 0.1, 1.0, 2.5, 3.3333333333333335, 1e-7, 1.5e-5, 5e-324, 9.999999999999998, 10.0],
)
def test_ratings_are_written_as_the_contract_writes_them(rating: float | None) -> None:
    assert_same_bytes([row(rating=rating), row(event_id="e2", rating=rating)])


@pytest.mark.parametrize(
    "user_id",
    [
        "u",
        "ü-ñ-東京-🎬",  # non-ASCII stays UTF-8, unescaped
        'say "hi"',  # JSON escapes
        "back\\slash",
        " padded\u3000",  # the contract strips whitespace, the key too
        "in ner",
        "x" * ID_MAX_CHARS,
        "\u00a0nbsp",
        "tab\u2007inside",
    ],
)
def test_ids_that_need_care(user_id: str) -> None:
    assert_same_bytes([row(user_id=user_id, item_id=user_id), row(event_id=user_id)])


def test_actions_times_and_mixed_batches() -> None:
    rows = [
        row(event_id=f"e{n}", action=action, event_time=T0 + n, rating=None if n % 2 else 3.0)
        for n, action in enumerate(["view", "click", "rate", "cart", "purchase"] * 3)
    ]
    rows.append(row(event_id="odd", user_id=" spaced "))  # one row on the slow path
    assert_same_bytes(rows)


def test_integer_id_columns_become_their_decimal_text() -> None:
    schema = pa.schema(
        [*EVENTS_SCHEMA][:2] + [pa.field("user_id", pa.int64())] + [*EVENTS_SCHEMA][3:]
    )
    rows = [row(user_id=7), row(event_id="e2", user_id=12345678901)]
    records = encode_rows(batch_of(rows, schema), offset_ms=0)
    assert records.keys == [b"7", b"12345678901"]
    assert records.values == [contract({**r, "user_id": str(r["user_id"])})[1] for r in rows]


def test_rebased_rows_match_uuid5_and_the_shifted_time() -> None:
    rows = [row(event_id=f"e{n}", event_time=T0 + n) for n in range(5)]
    assert_same_bytes(rows, offset_ms=123_456_789)
    assert rebased_id("e1", -5) == uuid.uuid5(REBASE_NAMESPACE, "e1@-5").hex


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"user_id": "x" * (ID_MAX_CHARS + 1)}, "user_id"),
        ({"item_id": "   "}, "item_id"),
        ({"item_id": "line\nbreak"}, "item_id"),
        ({"action": "like"}, "action"),
        ({"rating": 10.5}, "rating"),
        ({"rating": float("nan")}, "rating"),
        ({"event_time": 1_000_000_000}, "event_time"),
    ],
)
def test_a_row_outside_the_contract_is_rejected(fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(RecordRejected, match=problem):
        encode_rows(batch_of([row(), row(event_id="bad", **fields)]))


def test_slices_keep_keys_and_values_together() -> None:
    records = encode_rows(batch_of([row(event_id=f"e{n}", user_id=f"u{n}") for n in range(4)]))
    part = records.slice(1, 3)
    assert part.keys == [b"u1", b"u2"] and len(part) == 2
    assert part.values == records.values[1:3]
