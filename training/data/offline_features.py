"""Feature history from the archived log: the Feast batch sources that training reads.

The archived interactions, served recommendations and clicks are folded in event-time
order with the worker's own functions (``streams.folding``: ``fold_interaction``,
``ItemDelta``, ``fold_item``, ``stamp``, ``user_rows``, ``item_rows``; the
impression-click join of ``streams.joins``), so offline and online features are the same
function of the log. Each state change is one row, stamped as the worker stamps it: the
last event time, or one millisecond after the previous row of that entity when event time
does not move forward (two events in one millisecond). A row stamped ``s`` therefore only
ever holds events with ``event_time <= s``, which is what point-in-time lookups rely on.

Differences from the worker, both about *when* rows exist, never about their values:
the worker writes one row per entity per batch (here: one per event), and it folds in
arrival order (here: event-time order; in the same millisecond interactions, then served
recommendations, then clicks). The join's rules are by event time, so its counts are the
worker's unless an event arrived there more than ``streams.joins.GRACE_MS`` out of order.

Output (``<data_dir>/features/``, the paths of ``feature_repo/definitions.py``):
``user_recent.parquet`` and ``item_stats.parquet``, written in row groups of
``chunk_rows`` under a temporary name and renamed into place, so memory stays bounded by
the fold state plus one chunk, and Feast never reads half a file.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from feature_repo import fields
from streamrec.settings import Settings
from streams.archiver import read_clicks, read_interactions, read_recommendations
from streams.events import Click, Interaction, RecommendationServed, RecommendedItem
from streams.folding import (
    ItemDelta,
    ItemState,
    UserState,
    fold_interaction,
    fold_item,
    item_rows,
    stamp,
    user_rows,
)
from streams.joins import RequestJoin

FEATURES_DIR = "features"
USER_RECENT_FILE = "user_recent.parquet"
ITEM_STATS_FILE = "item_stats.parquet"
CHUNK_ROWS = 50_000
# The two batch sources a fold writes: user_recent and item_stats.
SIDES = ("users", "items")
EXPIRE_EVERY = 10_000  # events between sweeps of the join's expired requests

# Column types of the Feast batch sources; they match the feature views' schemas.
EVENT_TIMESTAMP = pa.timestamp("ms", tz="UTC")
_ARROW = {
    "int64": pa.int64(),
    "float64": pa.float64(),
    "string[]": pa.list_(pa.string()),
    "int64[]": pa.list_(pa.int64()),
    "float64[]": pa.list_(pa.float64()),
}


def source_schema(key: str, declared: dict[str, fields.Kind]) -> pa.Schema:
    """A batch source's columns: the entity key, the view's fields, the row time."""
    return pa.schema(
        [
            pa.field(key, pa.string(), nullable=False),
            *(pa.field(name, _ARROW[kind]) for name, kind in declared.items()),
            pa.field(fields.ROW_TIME, EVENT_TIMESTAMP, nullable=False),
        ]
    )


USER_RECENT_SCHEMA = source_schema("user_id", fields.USER_RECENT)
ITEM_STATS_SCHEMA = source_schema("item_id", fields.ITEM_STATS)


def user_recent_path(data_dir: Path) -> Path:
    return Path(data_dir) / FEATURES_DIR / USER_RECENT_FILE


def item_stats_path(data_dir: Path) -> Path:
    return Path(data_dir) / FEATURES_DIR / ITEM_STATS_FILE


@dataclass
class FeatureHistoryReport:
    interactions: int = 0
    clicks: int = 0
    recommendations: int = 0
    duplicates: int = 0
    user_rows: int = 0
    item_rows: int = 0
    users: int = 0
    items: int = 0
    user_path: str = ""
    item_path: str = ""


def _columns(table: pa.Table) -> dict[str, list[Any]]:
    return {name: table[name].to_pylist() for name in table.column_names}


def _interactions(table: pa.Table) -> Iterator[tuple[int, int, Interaction]]:
    """``(event_time, 0, event)``; ``model_construct`` skips validation: the archiver
    only wrote events that decoded."""
    cols = _columns(table)
    for n in range(table.num_rows):
        yield (
            cols["event_time"][n],
            0,
            Interaction.model_construct(
                event_id=cols["event_id"][n],
                event_time=cols["event_time"][n],
                user_id=cols["user_id"][n],
                item_id=cols["item_id"][n],
                action=cols["action"][n],
                rating=cols["rating"][n],
                source=cols["source"][n],
            ),
        )


def _recommendations(table: pa.Table) -> Iterator[tuple[int, int, RecommendationServed]]:
    cols = _columns(table)
    for n in range(table.num_rows):
        yield (
            cols["event_time"][n],
            1,
            RecommendationServed.model_construct(
                event_id=cols["event_id"][n],
                event_time=cols["event_time"][n],
                user_id=cols["user_id"][n],
                request_id=cols["request_id"][n],
                variant=cols["variant"][n],
                model_version=cols["model_version"][n],
                items=tuple(RecommendedItem.model_construct(**item) for item in cols["items"][n]),
            ),
        )


def _clicks(table: pa.Table) -> Iterator[tuple[int, int, Click]]:
    cols = _columns(table)
    for n in range(table.num_rows):
        yield (
            cols["event_time"][n],
            2,
            Click.model_construct(
                event_id=cols["event_id"][n],
                event_time=cols["event_time"][n],
                user_id=cols["user_id"][n],
                request_id=cols["request_id"][n],
                item_id=cols["item_id"][n],
                rank=cols["rank"][n],
            ),
        )


def _events(
    interactions: pa.Table, clicks: pa.Table, recommendations: pa.Table | None = None
) -> Iterator[Interaction | RecommendationServed | Click]:
    """The three topics merged by event time (interactions, then recommendations, then
    clicks on ties); each table is sorted by event time."""
    streams: list[Iterator[tuple[int, int, Any]]] = [_interactions(interactions), _clicks(clicks)]
    if recommendations is not None:
        streams.append(_recommendations(recommendations))
    for _, _, event in heapq.merge(*streams, key=lambda entry: (entry[0], entry[1])):
        yield event


class _ChunkedWriter:
    """Appends column batches to one Parquet file in row groups; renamed into place at end."""

    def __init__(self, path: Path, schema: pa.Schema, chunk_rows: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.schema = schema
        self.chunk_rows = chunk_rows
        self.rows = 0
        self._tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        self._writer = pq.ParquetWriter(self._tmp, schema)
        self._columns: dict[str, list[Any]] = {name: [] for name in schema.names}
        self._buffered = 0

    def append(self, columns: dict[str, list[Any]]) -> None:
        """Add rows given as columns; ``event_timestamp`` as epoch ms (what ``*_rows`` give)."""
        for name, values in columns.items():
            self._columns[name].extend(values)
        self._buffered += len(columns["event_timestamp"])
        if self._buffered >= self.chunk_rows:
            self._write()

    def _write(self) -> None:
        if not self._buffered:
            return
        self._writer.write_table(pa.Table.from_pydict(self._columns, schema=self.schema))
        self.rows += self._buffered
        self._columns = {name: [] for name in self.schema.names}
        self._buffered = 0

    def close(self) -> None:
        self._write()
        self._writer.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        self._writer.close()
        self._tmp.unlink(missing_ok=True)


def write_feature_history(
    data_dir: Path,
    interactions: pa.Table,
    clicks: pa.Table | None = None,
    recommendations: pa.Table | None = None,
    *,
    keep: int = 50,
    chunk_rows: int = CHUNK_ROWS,
    sides: Collection[str] = SIDES,
) -> FeatureHistoryReport:
    """Fold ``interactions`` (and ``clicks`` and ``recommendations``), each sorted by event
    time and free of repeated event ids (``read_interactions`` gives that), into the two
    batch sources.

    ``keep`` is the worker's ``recent_items_max``. ``sides``: the sources to write,
    ``"users"`` and/or ``"items"``; they depend on nothing of each other, so two
    processes can write one each (``training.data.examples.fold_history``).
    """
    unknown = set(sides) - set(SIDES)
    if unknown or not sides:
        raise ValueError(f"sides must be among {SIDES}, got {sorted(sides)}")
    fold_items = "items" in sides
    clicks = clicks if clicks is not None else pa.table({"event_time": pa.array([], pa.int64())})
    report = FeatureHistoryReport(interactions=interactions.num_rows, clicks=clicks.num_rows)
    report.recommendations = recommendations.num_rows if recommendations is not None else 0
    users: dict[str, UserState] = {}
    items: dict[str, ItemState] = {}
    # Event-time order has no late events, so the join's rules give exactly what the worker
    # folds; expiring now and then keeps only the requests still in their window in memory.
    join = RequestJoin()
    user_out = (
        _ChunkedWriter(user_recent_path(data_dir), USER_RECENT_SCHEMA, chunk_rows)
        if "users" in sides
        else None
    )
    item_out = (
        _ChunkedWriter(item_stats_path(data_dir), ITEM_STATS_SCHEMA, chunk_rows)
        if fold_items
        else None
    )

    def fold_into_item(item_id: str, delta: ItemDelta) -> None:
        assert item_out is not None
        item = items.get(item_id)
        if item is None:
            item = items[item_id] = ItemState()
        fold_item(item, delta)
        stamp(item)
        item_out.append(item_rows([(item_id, item)]))

    # the user side reads only the interactions (a duplicate is told by the user's state)
    events = (
        _events(interactions, clicks, recommendations)
        if fold_items
        else (event for _, _, event in _interactions(interactions))
    )
    outputs = [out for out in (user_out, item_out) if out is not None]
    try:
        for position, event in enumerate(events, start=1):
            if isinstance(event, RecommendationServed | Click):
                for _, _, item_id, kind, at in join.fold(event, "archive", 0, position):
                    delta = ItemDelta(item_id)
                    delta.add_kind(kind, at)
                    fold_into_item(item_id, delta)
                if position % EXPIRE_EVERY == 0:
                    join.expire()
                if isinstance(event, RecommendationServed):
                    continue
            if isinstance(event, Interaction):
                user = users.get(event.user_id)
                if user is None:
                    user = users[event.user_id] = UserState()
                if not fold_interaction(user, event, keep):
                    report.duplicates += 1
                    continue
                if user_out is not None:
                    stamp(user)
                    user_out.append(user_rows([(event.user_id, user)]))
            if fold_items:
                delta = ItemDelta(event.item_id)
                delta.add(event)
                fold_into_item(event.item_id, delta)
        for out in outputs:
            out.close()
    except BaseException:
        for out in outputs:
            out.abort()
        raise
    if user_out is not None:
        report.user_rows, report.user_path = user_out.rows, str(user_out.path)
        report.users = len(users)
    if item_out is not None:
        report.item_rows, report.item_path = item_out.rows, str(item_out.path)
        report.items = len(items)
    return report


def build_feature_history(
    settings: Settings,
    *,
    until_ms: int | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> FeatureHistoryReport:
    """Read the archived log of ``settings.topic_prefix`` (events before ``until_ms``) and
    write the feature history under ``settings.data_dir``."""
    interactions = read_interactions(settings.data_dir, settings.topic_prefix, until_ms)
    clicks = read_clicks(settings.data_dir, settings.topic_prefix, until_ms)
    recommendations = read_recommendations(settings.data_dir, settings.topic_prefix, until_ms)
    return write_feature_history(
        settings.data_dir,
        interactions,
        clicks,
        recommendations,
        keep=settings.recent_items_max,
        chunk_rows=chunk_rows,
    )
