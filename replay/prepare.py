"""``data prepare``: turn a dataset into the canonical, cleaned, time-ordered event log.

Output, under ``<data_dir>/datasets/<name>/``:

* ``events.parquet`` — ``EVENTS_SCHEMA``, sorted by event_time (ties in source order);
* ``items.parquet`` — the catalogue of the items in the log, when the source has one;
* ``prepare.json`` — the :class:`PrepareReport`, so later readers know how it was made.

Files are written under a temporary name and renamed into place: a reader (the replayer,
training) never sees half a log, and a failed run leaves the previous log intact.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from replay.cleaning import (
    RowFilter,
    StreamDeduper,
    compact,
    duplicate_mask,
    iter_slices,
    k_core_mask,
    time_order,
)
from replay.dataset import EVENTS_SCHEMA, ITEMS_SCHEMA, event_ids
from replay.loading import LoadStats, SourceError, rechunk
from replay.sources import open_source
from streamrec.paths import SWITCHES_FILE, dataset_dir
from streamrec.settings import Settings
from streamrec.times import format_ms

CHUNK_ROWS = 500_000


@dataclass
class PrepareReport:
    """What ``prepare`` read, dropped at each step, and wrote."""

    name: str
    source: str
    rows_read: int = 0
    malformed: int = 0
    malformed_samples: list[str] = field(default_factory=list)
    dropped_min_rating: int = 0
    dropped_time_range: int = 0
    dropped_duplicates: int = 0
    dropped_k_core: int = 0
    k_core_rounds: int = 0
    written: int = 0
    users: int = 0
    items: int = 0
    catalogue_items: int | None = None
    first_event_ms: int | None = None
    last_event_ms: int | None = None
    events_path: str = ""
    items_path: str | None = None

    def summary(self) -> str:
        """Human-readable lines for the command line."""
        lines = [
            f"{self.name}: read {self.rows_read:,} rows, {self.malformed:,} malformed",
            f"  dropped: min-rating {self.dropped_min_rating:,}, time range "
            f"{self.dropped_time_range:,}, duplicates {self.dropped_duplicates:,}, k-core "
            f"{self.dropped_k_core:,} ({self.k_core_rounds} rounds)",
            f"  wrote {self.written:,} events ({self.users:,} users, {self.items:,} items) "
            f"to {self.events_path}",
        ]
        if self.first_event_ms is not None and self.last_event_ms is not None:
            lines.append(
                f"  event time {format_ms(self.first_event_ms)} .. {format_ms(self.last_event_ms)}"
            )
        if self.items_path:
            lines.append(f"  catalogue: {self.catalogue_items:,} items in {self.items_path}")
        lines.extend(f"  malformed: {sample}" for sample in self.malformed_samples)
        return "\n".join(lines)


def prepare(
    settings: Settings,
    source: str,
    *,
    min_rating: float | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
    k_core: int | None = None,
    dedupe: bool = True,
    chunk_rows: int = CHUNK_ROWS,
    progress: Callable[[LoadStats], None] | None = None,
) -> PrepareReport:
    """Load ``source``, clean it, and write the canonical log; see the module docstring.

    ``progress`` is called with the load counters after each batch read, so a command can
    show that a 9 GB file is moving.
    """
    if k_core is not None and k_core < 1:
        raise SourceError(f"--k-core must be at least 1, got {k_core}")
    if since_ms is not None and until_ms is not None and since_ms >= until_ms:
        raise SourceError("--since must be before --until")
    loader = open_source(source, settings.data_dir)
    folder = dataset_dir(settings.data_dir, loader.name)
    folder.mkdir(parents=True, exist_ok=True)
    report = PrepareReport(name=loader.name, source=source)
    stats = LoadStats()
    row_filter = RowFilter(min_rating, since_ms, until_ms)
    tables = _filtered(loader.batches(stats), row_filter, report, stats, progress)
    events_file = folder / "events.parquet"
    if loader.sorted_by_time and k_core is None:
        chunks = _streamed(tables, dedupe, report, chunk_rows)
    else:
        chunks = _compacted(tables, dedupe, k_core, report, chunk_rows)
    seen_items = _write_events(events_file, loader.name, chunks, report)
    report.malformed = stats.malformed
    report.rows_read = stats.rows_read
    report.malformed_samples = list(stats.samples)
    report.events_path = str(events_file)
    catalogue = loader.catalogue()
    items_file = folder / "items.parquet"
    if catalogue is not None:
        catalogue = _catalogue_of(catalogue, seen_items)
        _atomic_write(items_file, catalogue, ITEMS_SCHEMA)
        report.catalogue_items = catalogue.num_rows
        report.items_path = str(items_file)
    elif items_file.exists():
        items_file.unlink()  # a stale catalogue from an earlier source would mislead
    planted = getattr(loader, "planted_switches", None)
    switches = planted() if planted is not None else None
    switches_file = folder / SWITCHES_FILE
    if switches is not None:
        _atomic_write(switches_file, switches, switches.schema)
    else:
        switches_file.unlink(missing_ok=True)
    (folder / "prepare.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    return report


def _filtered(
    tables: Iterator[pa.Table],
    row_filter: RowFilter,
    report: PrepareReport,
    stats: LoadStats,
    progress: Callable[[LoadStats], None] | None,
) -> Iterator[pa.Table]:
    for table in tables:
        if progress is not None:
            progress(stats)
        kept, by_rating, by_time = row_filter.apply(table)
        report.dropped_min_rating += by_rating
        report.dropped_time_range += by_time
        yield kept


def _streamed(
    tables: Iterator[pa.Table], dedupe: bool, report: PrepareReport, chunk_rows: int
) -> Iterator[pa.Table]:
    """Time-sorted sources go straight through: memory stays at one chunk."""
    deduper = StreamDeduper()
    for table in rechunk(tables, chunk_rows):
        if dedupe:
            table, dropped = deduper.apply(table)
            report.dropped_duplicates += dropped
        yield table


def _compacted(
    tables: Iterator[pa.Table],
    dedupe: bool,
    k_core: int | None,
    report: PrepareReport,
    chunk_rows: int,
) -> Iterator[pa.Table]:
    """Unsorted sources, or k-core: gather a compact copy, clean it, emit it sorted."""
    log = compact(tables)
    if dedupe and len(log):
        duplicate = duplicate_mask(log)
        report.dropped_duplicates = int(duplicate.sum())
        log = log.take(np.flatnonzero(~duplicate))
    if k_core is not None and len(log):
        keep, report.k_core_rounds = k_core_mask(log, k_core)
        report.dropped_k_core = int((~keep).sum())
        log = log.take(np.flatnonzero(keep))
    order = time_order(log)
    for part in iter_slices(len(order), chunk_rows):
        yield log.to_raw(order[part])


def _write_events(
    path: Path, name: str, chunks: Iterator[pa.Table], report: PrepareReport
) -> set[str]:
    """Write the log; returns the item ids in it (for the catalogue)."""
    users: set[str] = set()
    items: set[str] = set()
    tmp = path.with_name(path.name + ".tmp")
    try:
        with pq.ParquetWriter(tmp, EVENTS_SCHEMA, compression="zstd") as writer:
            for raw in chunks:
                if not raw.num_rows:
                    continue
                rows = raw.column("row").to_pylist()
                times = raw.column("event_time").to_pylist()
                user_ids = raw.column("user_id").to_pylist()
                item_ids = raw.column("item_id").to_pylist()
                table = pa.Table.from_arrays(
                    [
                        pa.array(event_ids(name, rows, user_ids, item_ids, times), pa.string()),
                        raw.column("event_time"),
                        raw.column("user_id"),
                        raw.column("item_id"),
                        raw.column("action"),
                        raw.column("rating"),
                    ],
                    schema=EVENTS_SCHEMA,
                )
                writer.write_table(table, row_group_size=len(rows))
                users.update(user_ids)
                items.update(item_ids)
                if report.first_event_ms is None:
                    report.first_event_ms = times[0]
                report.last_event_ms = times[-1]
                report.written += len(rows)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    report.users, report.items = len(users), len(items)
    return items


def _catalogue_of(catalogue: pa.Table, item_ids: set[str]) -> pa.Table:
    """The catalogue rows of the items in the log, one per item (the first one listed)."""
    catalogue = catalogue.filter(pc.is_in(catalogue.column("item_id"), pa.array(item_ids)))
    first = (
        catalogue.append_column("position", pa.array(np.arange(catalogue.num_rows)))
        .group_by("item_id", use_threads=False)
        .aggregate([("position", "min")])
        .column("position_min")
    )
    return catalogue.take(pa.array(np.sort(first.to_numpy()))).cast(ITEMS_SCHEMA)


def _atomic_write(path: Path, table: pa.Table, schema: pa.Schema) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        pq.write_table(table.cast(schema), tmp, compression="zstd")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
