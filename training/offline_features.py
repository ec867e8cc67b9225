"""Feature history from the archived log: the Feast batch sources that training reads.

The archived interactions and clicks are folded in event-time order with the worker's own
functions (``streams.folding``: ``fold_interaction``, ``ItemDelta``, ``fold_item``,
``stamp``, ``user_rows``, ``item_rows``), so offline and online features are the same
function of the log. Each state change is one row, stamped as the worker stamps it: the
last event time, or one millisecond after the previous row of that entity when event time
does not move forward (two events in one millisecond). A row stamped ``s`` therefore only
ever holds events with ``event_time <= s``, which is what point-in-time lookups rely on.

Differences from the worker, both about *when* rows exist, never about their values:
the worker writes one row per entity per batch (here: one per event), and it folds in
arrival order (here: event-time order; interactions before clicks in the same millisecond).

Output (``<data_dir>/features/``, the paths of ``feature_repo/definitions.py``):
``user_recent.parquet`` and ``item_stats.parquet``, written in row groups of
``chunk_rows`` under a temporary name and renamed into place, so memory stays bounded by
the fold state plus one chunk, and Feast never reads half a file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from streamrec.settings import Settings
from streams.archiver import read_clicks, read_interactions
from streams.events import Click, Interaction
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

FEATURES_DIR = "features"
USER_RECENT_FILE = "user_recent.parquet"
ITEM_STATS_FILE = "item_stats.parquet"
CHUNK_ROWS = 50_000

# Column types of the Feast batch sources; they match the feature views' schemas.
EVENT_TIMESTAMP = pa.timestamp("ms", tz="UTC")
USER_RECENT_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("recent_items", pa.list_(pa.string())),
        pa.field("recent_times", pa.list_(pa.int64())),
        pa.field("interaction_count", pa.int64()),
        pa.field("last_event_time", pa.int64()),
        pa.field("event_timestamp", EVENT_TIMESTAMP, nullable=False),
    ]
)
ITEM_STATS_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("interaction_count", pa.int64()),
        pa.field("click_count", pa.int64()),
        pa.field("purchase_count", pa.int64()),
        pa.field("last_event_time", pa.int64()),
        pa.field("trend_score", pa.float64()),
        pa.field("event_timestamp", EVENT_TIMESTAMP, nullable=False),
    ]
)


def user_recent_path(data_dir: Path) -> Path:
    return Path(data_dir) / FEATURES_DIR / USER_RECENT_FILE


def item_stats_path(data_dir: Path) -> Path:
    return Path(data_dir) / FEATURES_DIR / ITEM_STATS_FILE


@dataclass
class FeatureHistoryReport:
    interactions: int = 0
    clicks: int = 0
    duplicates: int = 0
    user_rows: int = 0
    item_rows: int = 0
    users: int = 0
    items: int = 0
    user_path: str = ""
    item_path: str = ""


def _events(interactions: pa.Table, clicks: pa.Table) -> Iterator[Interaction | Click]:
    """Interactions and clicks merged by event time (interactions first on ties).

    ``model_construct`` skips validation: the archiver only wrote events that decoded.
    """
    n_interactions, n_clicks = interactions.num_rows, clicks.num_rows
    i_cols = {name: interactions[name].to_pylist() for name in interactions.column_names}
    c_cols = {name: clicks[name].to_pylist() for name in clicks.column_names}
    i = c = 0
    while i < n_interactions or c < n_clicks:
        take_click = c < n_clicks and (
            i >= n_interactions or c_cols["event_time"][c] < i_cols["event_time"][i]
        )
        if take_click:
            yield Click.model_construct(
                event_id=c_cols["event_id"][c],
                event_time=c_cols["event_time"][c],
                user_id=c_cols["user_id"][c],
                request_id=c_cols["request_id"][c],
                item_id=c_cols["item_id"][c],
                rank=c_cols["rank"][c],
            )
            c += 1
        else:
            yield Interaction.model_construct(
                event_id=i_cols["event_id"][i],
                event_time=i_cols["event_time"][i],
                user_id=i_cols["user_id"][i],
                item_id=i_cols["item_id"][i],
                action=i_cols["action"][i],
                rating=i_cols["rating"][i],
                source=i_cols["source"][i],
            )
            i += 1


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
    *,
    keep: int = 50,
    chunk_rows: int = CHUNK_ROWS,
) -> FeatureHistoryReport:
    """Fold ``interactions`` (and ``clicks``), both sorted by event time and free of
    repeated event ids (``read_interactions`` gives that), into the two batch sources.

    ``keep`` is the worker's ``recent_items_max``.
    """
    clicks = clicks if clicks is not None else pa.table({"event_time": pa.array([], pa.int64())})
    report = FeatureHistoryReport(interactions=interactions.num_rows, clicks=clicks.num_rows)
    users: dict[str, UserState] = {}
    items: dict[str, ItemState] = {}
    user_out = _ChunkedWriter(user_recent_path(data_dir), USER_RECENT_SCHEMA, chunk_rows)
    item_out = _ChunkedWriter(item_stats_path(data_dir), ITEM_STATS_SCHEMA, chunk_rows)
    try:
        for event in _events(interactions, clicks):
            if isinstance(event, Interaction):
                user = users.get(event.user_id)
                if user is None:
                    user = users[event.user_id] = UserState()
                if not fold_interaction(user, event, keep):
                    report.duplicates += 1
                    continue
                stamp(user)
                user_out.append(user_rows([(event.user_id, user)]))
            delta = ItemDelta(event.item_id)
            delta.add(event)
            item = items.get(event.item_id)
            if item is None:
                item = items[event.item_id] = ItemState()
            fold_item(item, delta)
            stamp(item)
            item_out.append(item_rows([(event.item_id, item)]))
        user_out.close()
        item_out.close()
    except BaseException:
        user_out.abort()
        item_out.abort()
        raise
    report.user_rows, report.item_rows = user_out.rows, item_out.rows
    report.users, report.items = len(users), len(items)
    report.user_path, report.item_path = str(user_out.path), str(item_out.path)
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
    return write_feature_history(
        settings.data_dir,
        interactions,
        clicks,
        keep=settings.recent_items_max,
        chunk_rows=chunk_rows,
    )
