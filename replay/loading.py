"""What every loader shares: the source protocol, load counters, and a chunking row buffer.

Loaders read files line by line and hand rows to a :class:`RowBuffer`, which validates each
row against the event contract and turns every ``chunk_rows`` rows into one Arrow table, so
no loader ever holds a whole dataset as Python objects. A bad row is counted in
:class:`LoadStats` with a sample reason; it never stops the load.
"""

from __future__ import annotations

import gzip
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

import pyarrow as pa

from replay.dataset import MAX_EVENT_TIME_MS, MAX_ID_LENGTH, MIN_EVENT_TIME_MS, RAW_SCHEMA

GZIP_MAGIC = b"\x1f\x8b"
DEFAULT_CHUNK_ROWS = 200_000
MAX_SAMPLES = 5


class SourceError(ValueError):
    """A source spec or file that cannot be loaded at all (as opposed to one bad row)."""


@dataclass
class LoadStats:
    """Rows seen in the source and rows refused, with a few reasons to show the user."""

    rows_read: int = 0
    malformed: int = 0
    samples: list[str] = field(default_factory=list)

    def reject(self, where: str, reason: str) -> None:
        self.malformed += 1
        if len(self.samples) < MAX_SAMPLES:
            self.samples.append(f"{where}: {reason}")


class Source(Protocol):
    """A dataset that ``prepare`` can turn into the canonical log."""

    name: str
    # True when batches come in non-decreasing event_time order (prepare can then stream).
    sorted_by_time: bool

    def batches(self, stats: LoadStats) -> Iterator[pa.Table]:
        """Raw event tables (``RAW_SCHEMA``), counting rows and rejects into ``stats``."""
        ...

    def catalogue(self) -> pa.Table | None:
        """The item catalogue (``ITEMS_SCHEMA``), or None when the source has none."""
        ...


class RowBuffer:
    """Collects validated rows and releases them as Arrow tables of ``chunk_rows`` rows."""

    def __init__(self, stats: LoadStats, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> None:
        self.stats = stats
        self.chunk_rows = chunk_rows
        self._clear()

    def _clear(self) -> None:
        self._rows: list[int] = []
        self._times: list[int] = []
        self._users: list[str] = []
        self._items: list[str] = []
        self._actions: list[str] = []
        self._ratings: list[float | None] = []

    def __len__(self) -> int:
        return len(self._rows)

    def full(self) -> bool:
        return len(self._rows) >= self.chunk_rows

    def add(
        self,
        where: str,
        row: int,
        user: object,
        item: object,
        time_ms: int,
        rating: float | None,
        action: str = "rate",
    ) -> bool:
        """Append one row if it satisfies the contract; otherwise count it as malformed."""
        reason = _problem(user, item, time_ms, rating)
        if reason is not None:
            self.stats.reject(where, reason)
            return False
        self._rows.append(row)
        self._times.append(time_ms)
        self._users.append(str(user).strip())
        self._items.append(str(item).strip())
        self._actions.append(action)
        self._ratings.append(rating)
        return True

    def take(self) -> pa.Table:
        table = pa.Table.from_arrays(
            [
                pa.array(self._rows, pa.int64()),
                pa.array(self._times, pa.int64()),
                pa.array(self._users, pa.string()),
                pa.array(self._items, pa.string()),
                pa.array(self._actions, pa.string()),
                pa.array(self._ratings, pa.float64()),
            ],
            schema=RAW_SCHEMA,
        )
        self._clear()
        return table


def _problem(user: object, item: object, time_ms: int, rating: float | None) -> str | None:
    for label, value in (("user", user), ("item", item)):
        if not isinstance(value, str | int) or isinstance(value, bool):
            return f"{label} id is {type(value).__name__}, not a string"
        text = str(value).strip()
        if not text:
            return f"empty {label} id"
        if len(text) > MAX_ID_LENGTH:
            return f"{label} id longer than {MAX_ID_LENGTH} characters"
    if not MIN_EVENT_TIME_MS <= time_ms <= MAX_EVENT_TIME_MS:
        return f"time {time_ms} ms is outside 1990..2100 (seconds given as milliseconds?)"
    if rating is not None and not (math.isfinite(rating) and 0 <= rating <= 10):
        return f"rating {rating} outside 0..10"
    return None


def open_text(path: Path, encoding: str = "utf-8-sig") -> IO[str]:
    """Open a plain or gzip text file, telling them apart by magic bytes, not by name.

    ``newline=""`` keeps line endings as they are, which the csv module needs; loaders
    strip them. ``utf-8-sig`` reads UTF-8 and drops a byte-order mark, which spreadsheet
    exports put before a CSV header.
    """
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"{path}: no such file")
    with path.open("rb") as probe:
        magic = probe.read(2)
    if magic == GZIP_MAGIC:
        return io.TextIOWrapper(
            gzip.open(path, "rb"), encoding=encoding, errors="replace", newline=""
        )
    return path.open("r", encoding=encoding, errors="replace", newline="")


def parse_float(text: str) -> float:
    """float() that refuses NaN and infinities, which would poison ratings and times."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    return value


def rechunk(tables: Iterator[pa.Table], rows: int) -> Iterator[pa.Table]:
    """Regroup a stream of tables into tables of exactly ``rows`` rows (the last shorter).

    Writers use it to get row groups of a chosen size whatever the loaders' batch size.
    """
    pending: list[pa.Table] = []
    pending_rows = 0
    for table in tables:
        if not table.num_rows:
            continue
        pending.append(table)
        pending_rows += table.num_rows
        while pending_rows >= rows:
            merged = pa.concat_tables(pending)
            yield merged.slice(0, rows)
            rest = merged.slice(rows)
            pending, pending_rows = [rest], rest.num_rows
    if pending_rows:
        yield pa.concat_tables(pending)
