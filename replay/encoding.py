"""Interaction records for a whole batch of the prepared log at once, byte-identical to
:func:`streams.events.encode`.

The contract's encoder validates one pydantic object per event and dumps it; at 100,000
events/s that is most of the time a replay has. Here the JSON of a batch is assembled by
Arrow's string kernels from the columns, with the field order and number formats of the
contract's encoder: ids, times and the action are written as they are, each distinct
rating once by pydantic's own serializer. A row takes this path only when a vectorised
check proves the contract would leave it unchanged (ids without characters that JSON
escapes or the contract rejects or strips, the time in range, a known action, a rating
in bounds); any other row goes through ``Interaction.model_validate`` and ``encode``, so
it is normalised or rejected exactly as before. ``tests/unit/replay/test_replay_encoding.py``
compares the bytes with the contract's encoder.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pydantic_core
from pydantic import ValidationError

from streams.events import (
    ACTIONS,
    EVENT_TIME_MAX_MS,
    EVENT_TIME_MIN_MS,
    ID_MAX_CHARS,
    RATING_MAX,
    RATING_MIN,
    Interaction,
    encode,
)

# Namespace of the ids of rebased events: "event X shifted by N ms" is a new, stable id.
REBASE_NAMESPACE = uuid.UUID("6f0d4c2e-7f7b-4f59-9a57-2f1b1d1b9a11")
_NAMESPACE_BYTES = REBASE_NAMESPACE.bytes

# Characters an id may not hold on the fast path: what the contract rejects (C0/C1
# controls, U+2028/2029) and what JSON escapes (quote, backslash). RE2 syntax.
_NEVER = r'\x00-\x1F\x7F-\x9F\x{2028}\x{2029}"\\'
# Characters ``str.strip`` removes that _NEVER does not already exclude (str.isspace).
_SPACE = r" \x{A0}\x{1680}\x{2000}-\x{200A}\x{202F}\x{205F}\x{3000}"
# An id the contract keeps byte for byte: 1..ID_MAX_CHARS characters, none of _NEVER,
# and no whitespace at either end.
PLAIN_ID = (
    rf"^[^{_NEVER}{_SPACE}]"
    rf"(?:[^{_NEVER}]{{0,{ID_MAX_CHARS - 2}}}[^{_NEVER}{_SPACE}])?$"
)
ID_COLUMNS = ("event_id", "user_id", "item_id")


class RecordRejected(ValueError):
    """A row of the log that is not a valid Interaction."""


@dataclass(frozen=True)
class Records:
    """Kafka records of consecutive log rows: key (the user id) and value per row."""

    keys: list[bytes]
    values: list[bytes]

    def __len__(self) -> int:
        return len(self.values)

    def slice(self, start: int, end: int) -> Records:
        return Records(self.keys[start:end], self.values[start:end])


def rebased_id(event_id: str, offset_ms: int) -> str:
    """The id of ``event_id`` shifted by ``offset_ms``: a new fact with a stable id.

    ``uuid.uuid5(REBASE_NAMESPACE, f"{event_id}@{offset_ms}").hex``, without building a
    UUID object per event (a fifth of the time): SHA-1 of namespace and name, with the
    version (5) and variant (RFC 4122) bits set as RFC 4122 section 4.3 says.
    """
    digest = bytearray(
        hashlib.sha1(_NAMESPACE_BYTES + f"{event_id}@{offset_ms}".encode()).digest()[:16]
    )
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    return digest.hex()


def encode_rows(batch: pa.RecordBatch, *, offset_ms: int = 0) -> Records:
    """The records of every row of ``batch`` (prepared-log columns), event times shifted by
    ``offset_ms`` and ids rebased when it is not 0 (``replay --rebase-now``)."""
    if batch.num_rows == 0:
        return Records([], [])
    event_ids = _as_strings(batch.column("event_id"))
    if offset_ms:
        event_ids = pa.array(
            [rebased_id(i, offset_ms) for i in event_ids.to_pylist()], type=pa.string()
        )
    times = batch.column("event_time")
    if offset_ms:
        times = pc.add(times, offset_ms)
    users = _as_strings(batch.column("user_id"))
    items = _as_strings(batch.column("item_id"))
    actions = _as_strings(batch.column("action"))
    ratings = batch.column("rating")
    plain = _plain_rows(event_ids, times, users, items, actions, ratings)
    values = pc.binary_join_element_wise(
        '{"event_id":"',
        event_ids,
        '","schema":1,"event_time":',
        pc.cast(times, pa.string()),
        ',"user_id":"',
        users,
        '","item_id":"',
        items,
        '","action":"',
        actions,
        '","rating":',
        _rating_json(ratings),
        ',"source":"replay"}',
        "",
    )
    keys = pc.cast(users, pa.binary()).to_pylist()
    encoded = pc.cast(values, pa.binary()).to_pylist()
    if not pc.all(plain).as_py():
        # The few rows the fast path cannot vouch for: the contract normalises or rejects.
        columns = (event_ids, times, users, items, actions, ratings)
        for row in pc.indices_nonzero(pc.invert(plain)).to_pylist():
            keys[row], encoded[row] = _encode_one(*(column[row].as_py() for column in columns))
    return Records(keys, encoded)


def _as_strings(column: pa.Array) -> pa.Array:
    """Ids as text (an integer column becomes its decimal text, as the contract does)."""
    return column if column.type == pa.string() else pc.cast(column, pa.string())


def _plain_rows(
    event_ids: pa.Array,
    times: pa.Array,
    users: pa.Array,
    items: pa.Array,
    actions: pa.Array,
    ratings: pa.Array,
) -> pa.Array:
    """True where the contract would accept the row unchanged (see the module docstring)."""
    checks = [_plain_ids(ids) for ids in (event_ids, users, items)]
    checks.append(
        pc.and_(pc.greater_equal(times, EVENT_TIME_MIN_MS), pc.less_equal(times, EVENT_TIME_MAX_MS))
    )
    checks.append(pc.is_in(actions, value_set=pa.array(ACTIONS)))
    in_bounds = pc.and_(pc.greater_equal(ratings, RATING_MIN), pc.less_equal(ratings, RATING_MAX))
    checks.append(pc.or_(pc.is_null(ratings), in_bounds))
    plain = checks[0]
    for check in checks[1:]:
        plain = pc.and_kleene(plain, check)
    # A null anywhere (an id, a time) is not plain: the contract says what is wrong.
    return pc.fill_null(plain, False)


def _plain_ids(ids: pa.Array) -> pa.Array:
    """True where an id is plain (PLAIN_ID). Letters and digits alone are plain, and that
    check is a fifth of the regular expression's time, so the expression runs only when
    some id holds anything else."""
    alnum = pc.and_(pc.utf8_is_alnum(ids), pc.less_equal(pc.utf8_length(ids), ID_MAX_CHARS))
    if pc.all(alnum).as_py():
        return alnum
    return pc.match_substring_regex(ids, PLAIN_ID)


def _rating_json(ratings: pa.Array) -> pa.Array:
    """Each rating as the contract writes it; each distinct value formatted once."""
    as_float = ratings if ratings.type == pa.float64() else pc.cast(ratings, pa.float64())
    encoded = pc.dictionary_encode(as_float)
    formatted = pa.array(
        [
            pydantic_core.to_json(value).decode() if math.isfinite(value) else "null"
            for value in encoded.dictionary.to_pylist()
        ],
        type=pa.string(),
    )
    return pc.fill_null(pc.take(formatted, encoded.indices), "null")


def _encode_one(
    event_id: object,
    event_time: object,
    user_id: object,
    item_id: object,
    action: object,
    rating: object,
) -> tuple[bytes, bytes]:
    """One row through the contract: validated, normalised, encoded."""
    try:
        event = Interaction.model_validate(
            {
                "event_id": event_id,
                "event_time": event_time,
                "user_id": user_id,
                "item_id": item_id,
                "action": action,
                "rating": rating,
                "source": "replay",
            }
        )
    except ValidationError as exc:
        raise RecordRejected(f"event {event_id!r} is not a valid Interaction: {exc}") from exc
    return encode(event)
