"""The archiver: the event topics → the Parquet event log that is Feast's offline store.

Layout, under ``<data_dir>/archive/<topic-name>/``: one file per (partition, offset range),
``p<partition>-<first offset>-<last offset>.parquet`` (zero-padded, so names sort by offset).
The range covers every record consumed, including the ones the archiver cannot store
(undecodable, or outside its column types): those go to the dead-letter topic with the
reason and are counted, so one hostile record never stops the archive.

Exactly-once on disk, at-least-once from Kafka:

* a file is written under a temporary name, fsynced and renamed into place, and only then
  are the offsets committed (``enable.auto.commit=False``);
* a crash between the rename and the commit leaves a file whose range is past the committed
  offset. On (re)assignment each partition resumes after the last offset found on disk when
  that is ahead of the committed offset, so a rerun neither rewrites those records under a
  second name nor loses any; a rerun that does read the same range writes the same name;
* readers still drop repeated ``event_id``s, because a producer may redeliver an event as a
  new record (a new offset): that is a duplicate of the *event*, not of the record.

Columns: interactions carry the canonical event-log columns (``replay.dataset.EVENTS_SCHEMA``:
``event_id, event_time`` (int64 epoch ms)``, user_id, item_id, action, rating``) plus
``source``; recommendations keep ``items`` as a Parquet list of structs
``{item_id, rank, score, reason}`` (native nested data: readable by pyarrow, pandas and
DuckDB without a JSON parse); clicks their flat fields. Every file also has
``kafka_partition`` and ``kafka_offset``.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from streamrec.infra.kafka_retry import RETRIABLE_CODES, call_with_retry
from streamrec.paths import archive_topic_dir
from streamrec.settings import Settings
from streams.dead_letters import DeadLetters
from streams.events import (
    Click,
    Event,
    EventRejected,
    Interaction,
    RecommendationServed,
    Topics,
    decode,
)
from streams.log_schema import EVENT_LOG_SCHEMA

log = logging.getLogger(__name__)

ARCHIVE_DIR = "archive"
LAG_NOTE_SECONDS = 2.0  # how often `run` notes its lag for the metrics
_KAFKA_FIELDS = [
    pa.field("kafka_partition", pa.int32(), nullable=False),
    pa.field("kafka_offset", pa.int64(), nullable=False),
]
INTERACTION_SCHEMA = pa.schema(
    [*EVENT_LOG_SCHEMA, pa.field("source", pa.string(), nullable=False), *_KAFKA_FIELDS]
)
RECOMMENDED_ITEM = pa.struct(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("rank", pa.int32(), nullable=False),
        pa.field("score", pa.float64(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        # experiments (null outside one); parts written before them read as null
        pa.field("variant", pa.string()),
        pa.field("propensity", pa.float64()),
        # DIN's logit (null unless the trained cascade ranked the item; null in older parts)
        pa.field("din_score", pa.float64()),
    ]
)
RECOMMENDATION_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("event_time", pa.int64(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("variant", pa.string(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("experiment", pa.string()),
        pa.field("items", pa.list_(RECOMMENDED_ITEM), nullable=False),
        *_KAFKA_FIELDS,
    ]
)
CLICK_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("event_time", pa.int64(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("rank", pa.int32(), nullable=False),
        *_KAFKA_FIELDS,
    ]
)
SCHEMAS: dict[type[Event], pa.Schema] = {
    Interaction: INTERACTION_SCHEMA,
    RecommendationServed: RECOMMENDATION_SCHEMA,
    Click: CLICK_SCHEMA,
}
_PART_NAME = re.compile(r"^p(\d+)-(\d+)-(\d+)\.parquet$")


def topic_dir(data_dir: Path, topic: str) -> Path:
    """Folder of one topic's archive: ``<data_dir>/archive/<topic-name>``."""
    return archive_topic_dir(data_dir, topic)


def part_name(partition: int, first_offset: int, last_offset: int) -> str:
    return f"p{partition:04d}-{first_offset:020d}-{last_offset:020d}.parquet"


def archived_ranges(folder: Path) -> dict[int, list[tuple[int, int]]]:
    """(first, last) offset ranges on disk per partition, sorted."""
    ranges: dict[int, list[tuple[int, int]]] = {}
    if not folder.is_dir():
        return ranges
    for path in folder.iterdir():
        match = _PART_NAME.match(path.name)
        if match:
            partition, first, last = (int(g) for g in match.groups())
            ranges.setdefault(partition, []).append((first, last))
    return {p: sorted(r) for p, r in ranges.items()}


def _row(event: Event) -> dict[str, Any]:
    row = event.model_dump(exclude={"schema_version"})
    if isinstance(event, RecommendationServed):
        row["items"] = [item.model_dump() for item in event.items]
    return row


@dataclass
class _Pending:
    """Records of one (topic, partition) consumed since the last flush."""

    first_offset: int
    last_offset: int
    records: int = 0  # consumed, decodable or not
    rows: list[dict[str, Any]] = field(default_factory=list)
    # (offset, key, value) of each row, to dead-letter a row the columns cannot hold.
    raws: list[tuple[int, bytes | None, bytes | None]] = field(default_factory=list)


@dataclass
class ArchiveStats:
    """What one run consumed, wrote and skipped, per topic."""

    records: dict[str, int] = field(default_factory=dict)
    rows_written: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)

    def add(self, counter: dict[str, int], topic: str, n: int = 1) -> None:
        counter[topic] = counter.get(topic, 0) + n

    def summary(self) -> str:
        topics = sorted(set(self.records) | set(self.rows_written) | set(self.skipped))
        lines = [
            f"{topic}: {self.records.get(topic, 0):,} records, "
            f"{self.rows_written.get(topic, 0):,} rows written, "
            f"{self.skipped.get(topic, 0):,} dead-lettered"
            for topic in topics
        ]
        lines.append(f"{len(self.files)} files written")
        return "\n".join(lines)


def write_atomically(table: pa.Table, path: Path) -> None:
    """Write a Parquet file under a temporary name, fsync it, rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp)
    with tmp.open("rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class Archiver:
    """Consumes the interactions, recommendations and clicks topics into Parquet parts."""

    def __init__(
        self,
        settings: Settings,
        *,
        flush_records: int = 50_000,
        flush_seconds: float = 10.0,
        consumer_overrides: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.flush_records = flush_records
        self.flush_seconds = flush_seconds
        self.group_id = f"{settings.topic_prefix}archiver"
        config: dict[str, Any] = {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": self.group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            **settings.kafka_security(),
        }
        config.update(consumer_overrides or {})
        self._config = config
        self.stats = ArchiveStats()
        self._pending: dict[tuple[str, int], _Pending] = {}
        self._oldest_pending: float | None = None
        self._lag: dict[tuple[str, int], int] = {}
        self._lag_noted = 0.0
        self._dead_letters: DeadLetters | None = None

    def _open_dead_letters(self) -> DeadLetters:
        self._dead_letters = DeadLetters(self.settings.bootstrap_servers, self.topics, "archiver")
        return self._dead_letters

    def _close_dead_letters(self) -> None:
        if self._dead_letters is not None:
            self._dead_letters.close()
            self._dead_letters = None

    @property
    def archived_topics(self) -> list[str]:
        return [self.topics.interactions, self.topics.recommendations, self.topics.clicks]

    # -- positions -------------------------------------------------------------------------

    def _resume_positions(
        self, consumer: Consumer, partitions: list[TopicPartition]
    ) -> list[TopicPartition]:
        """Committed offset, or one past the last offset on disk when that is further."""
        committed = call_with_retry(
            "archiver: reading committed offsets",
            lambda: consumer.committed(partitions, timeout=30),
        )
        on_disk: dict[str, dict[int, list[tuple[int, int]]]] = {}
        resumed = []
        for tp in committed:
            ranges = on_disk.setdefault(
                tp.topic, archived_ranges(topic_dir(self.settings.data_dir, tp.topic))
            ).get(tp.partition, [])
            offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            if ranges:
                after_disk = max(last for _, last in ranges) + 1
                if offset == OFFSET_BEGINNING or after_disk > offset:
                    offset = after_disk
            resumed.append(TopicPartition(tp.topic, tp.partition, offset))
        return resumed

    def _existing_partitions(self, consumer: Consumer) -> list[TopicPartition]:
        metadata = call_with_retry(
            "archiver: listing topics", lambda: consumer.list_topics(timeout=30)
        )
        partitions: list[TopicPartition] = []
        for topic in self.archived_topics:
            found = metadata.topics.get(topic)
            if found is None or found.error is not None:
                log.warning("archiver: topic %s does not exist; skipping it", topic)
                continue
            partitions.extend(TopicPartition(topic, p) for p in sorted(found.partitions))
        return partitions

    # -- buffering and flushing ------------------------------------------------------------

    def _take(self, message: Any) -> _Pending:
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        self.stats.add(self.stats.records, topic)
        pending = self._pending.get((topic, partition))
        if pending is None:
            pending = self._pending[(topic, partition)] = _Pending(offset, offset)
        pending.last_offset = offset
        pending.records += 1
        if self._oldest_pending is None:
            self._oldest_pending = time.monotonic()
        try:
            event = decode(self.topics.event_type(topic), message.value())
        except EventRejected as rejected:
            self._reject(topic, partition, offset, message.key(), message.value(), rejected.reason)
            return pending
        row = _row(event)
        row["kafka_partition"] = partition
        row["kafka_offset"] = offset
        pending.rows.append(row)
        pending.raws.append((offset, message.key(), message.value()))
        return pending

    def _reject(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        reason: str,
    ) -> None:
        self.stats.add(self.stats.skipped, topic)
        assert self._dead_letters is not None, "dead letters are opened by run/run_once"
        self._dead_letters.send(
            topic=topic, partition=partition, offset=offset, key=key, value=value, reason=reason
        )

    def _table(self, topic: str, partition: int, pending: _Pending) -> pa.Table:
        """The pending rows as a table of the topic's schema. A row the columns cannot
        hold (the contract's bounds should prevent it; an old record may predate them) is
        dead-lettered instead of failing the whole part, which would stop the archive."""
        schema = SCHEMAS[self.topics.event_type(topic)]
        try:
            return pa.Table.from_pylist(pending.rows, schema=schema)
        except (pa.ArrowException, OverflowError, TypeError, ValueError):
            pass  # find the offending rows one by one; the happy path stays one call
        kept = []
        for row, (offset, key, value) in zip(pending.rows, pending.raws, strict=True):
            try:
                pa.Table.from_pylist([row], schema=schema)
            except (pa.ArrowException, OverflowError, TypeError, ValueError) as exc:
                reason = f"archive columns cannot hold it: {type(exc).__name__}: {exc}"
                self._reject(topic, partition, offset, key, value, reason)
                continue
            kept.append(row)
        return pa.Table.from_pylist(kept, schema=schema)

    def _due(self) -> bool:
        """Time to flush everything: the oldest pending record waited ``flush_seconds``."""
        return (
            self._oldest_pending is not None
            and time.monotonic() - self._oldest_pending >= self.flush_seconds
        )

    def flush(self, consumer: Consumer, only: Iterable[tuple[str, int]] | None = None) -> None:
        """Write every pending part file, then commit the offsets they cover."""
        keys = list(self._pending) if only is None else [k for k in only if k in self._pending]
        if not keys:
            return
        commits = []
        for key in keys:
            topic, partition = key
            pending = self._pending.pop(key)
            table = self._table(topic, partition, pending) if pending.rows else None
            if table is not None and table.num_rows:
                path = topic_dir(self.settings.data_dir, topic) / part_name(
                    partition, pending.first_offset, pending.last_offset
                )
                write_atomically(table, path)
                self.stats.files.append(path)
                self.stats.add(self.stats.rows_written, topic, table.num_rows)
            commits.append(TopicPartition(topic, partition, pending.last_offset + 1))
        if self._dead_letters is not None:
            self._dead_letters.flush()  # reported before the commit passes them
        call_with_retry(
            "archiver: committing offsets",
            lambda: consumer.commit(offsets=commits, asynchronous=False),
        )
        if not self._pending:
            self._oldest_pending = None

    # -- running ---------------------------------------------------------------------------

    def _consume(self, consumer: Consumer) -> None:
        """One fetch. A partition's part is cut every ``flush_records`` records, counted
        from where it resumed, so a rerun from the same offset cuts the same files."""
        for message in consumer.consume(num_messages=1000, timeout=0.5):
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                if error.retriable() or error.code() in RETRIABLE_CODES:
                    # librdkafka reconnects and refetches by itself; just say so.
                    log.warning("archiver: transient Kafka error, retrying: %s", error)
                    continue
                raise KafkaException(error)
            pending = self._take(message)
            if pending.records >= self.flush_records:
                self.flush(consumer, [(str(message.topic()), int(message.partition() or 0))])

    def run_once(self) -> ArchiveStats:
        """Drain every partition to the end offset it had at the start, flush, and return."""
        consumer = Consumer(self._config)
        self._open_dead_letters()
        try:
            partitions = self._resume_positions(consumer, self._existing_partitions(consumer))
            ends = {}
            for tp in partitions:
                low, high = call_with_retry(
                    f"archiver: end offsets of {tp.topic}[{tp.partition}]",
                    partial(consumer.get_watermark_offsets, tp, timeout=30),
                )
                ends[(tp.topic, tp.partition)] = high
                if tp.offset < 0:
                    tp.offset = low
            consumer.assign(partitions)
            remaining = [tp for tp in partitions if tp.offset < ends[(tp.topic, tp.partition)]]
            while remaining:
                self._consume(consumer)
                if self._due():
                    self.flush(consumer)
                positions = consumer.position(remaining)
                remaining = [
                    tp
                    for tp in positions
                    if tp.offset < 0 or tp.offset < ends[(tp.topic, tp.partition)]
                ]
            self.flush(consumer)
        finally:
            consumer.close()
            self._close_dead_letters()
        return self.stats

    def run(self, stop: threading.Event) -> ArchiveStats:
        """Follow the topics as a group member until ``stop`` is set; flush on the way out."""
        consumer = Consumer(self._config)
        self._open_dead_letters()

        def on_assign(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            consumer.assign(self._resume_positions(consumer, partitions))

        def on_revoke(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            self.flush(consumer, [(tp.topic, tp.partition) for tp in partitions])

        try:
            consumer.subscribe(self.archived_topics, on_assign=on_assign, on_revoke=on_revoke)
            while not stop.is_set():
                self._consume(consumer)
                self._note_lag(consumer)
                if self._due():
                    self.flush(consumer)
            self.flush(consumer)
        finally:
            consumer.close()
            self._close_dead_letters()
        return self.stats

    def lag(self) -> list[tuple[str, int, int]]:
        """(topic, partition, records behind the log end) as ``run`` last noted them."""
        return [(topic, partition, behind) for (topic, partition), behind in self._lag.items()]

    def _note_lag(self, consumer: Consumer) -> None:
        """Note the lag from the high watermarks the last fetches brought (no request to
        the broker), in the consuming thread: the consumer is not shared with a scrape."""
        now = time.monotonic()
        if now - self._lag_noted < LAG_NOTE_SECONDS:
            return
        self._lag_noted = now
        lag = {}
        for tp in consumer.position(consumer.assignment()):
            _low, high = consumer.get_watermark_offsets(tp, cached=True)
            if high >= 0 and tp.offset >= 0:
                lag[(tp.topic, tp.partition)] = max(0, high - tp.offset)
        self._lag = lag


def run_archiver(
    settings: Settings,
    *,
    once: bool,
    flush_records: int = 50_000,
    flush_seconds: float = 10.0,
    stop: threading.Event | None = None,
) -> ArchiveStats:
    archiver = Archiver(settings, flush_records=flush_records, flush_seconds=flush_seconds)
    if once:
        return archiver.run_once()
    return archiver.run(stop or threading.Event())


# -- reading -------------------------------------------------------------------------------


def read_topic(
    data_dir: Path,
    topic: str,
    schema: pa.Schema,
    until_ms: int | None = None,
    columns: list[str] | None = None,
) -> pa.Table:
    """All archived rows of one topic, events before ``until_ms`` (exclusive), sorted by
    event time (then partition and offset), one row per ``event_id`` (the first seen)."""
    folder = topic_dir(data_dir, topic)
    paths = sorted(p for p in folder.glob("p*.parquet")) if folder.is_dir() else []
    wanted = None
    if columns is not None:
        wanted = list(dict.fromkeys([*columns, "event_id", "event_time", *_KAFKA_COLUMNS]))
    tables = [pq.read_table(path, columns=wanted, schema=schema) for path in paths]
    selected = schema if wanted is None else pa.schema([schema.field(n) for n in wanted])
    table = pa.concat_tables(tables) if tables else selected.empty_table()
    if until_ms is not None:
        table = table.filter(pc.less(table["event_time"], until_ms))
    table = table.sort_by(
        [
            ("event_time", "ascending"),
            ("kafka_partition", "ascending"),
            ("kafka_offset", "ascending"),
        ]
    )
    repeated = pd.Series(table["event_id"].to_numpy(zero_copy_only=False)).duplicated().to_numpy()
    if repeated.any():
        table = table.filter(pa.array(~repeated))
    if columns is not None:
        table = table.select(columns)
    return table


_KAFKA_COLUMNS = ["kafka_partition", "kafka_offset"]


def read_interactions(data_dir: Path, prefix: str, until_ms: int | None = None) -> pa.Table:
    """The archived interactions (``INTERACTION_SCHEMA``) of topic prefix ``prefix``."""
    return read_topic(data_dir, Topics(prefix).interactions, INTERACTION_SCHEMA, until_ms)


def read_clicks(data_dir: Path, prefix: str, until_ms: int | None = None) -> pa.Table:
    """The archived clicks on served recommendations (``CLICK_SCHEMA``)."""
    return read_topic(data_dir, Topics(prefix).clicks, CLICK_SCHEMA, until_ms)


def read_recommendations(data_dir: Path, prefix: str, until_ms: int | None = None) -> pa.Table:
    """The archived served recommendations (``RECOMMENDATION_SCHEMA``)."""
    return read_topic(data_dir, Topics(prefix).recommendations, RECOMMENDATION_SCHEMA, until_ms)


def install_stop_signals(stop: threading.Event) -> Callable[[], None]:
    """Set ``stop`` on SIGTERM and SIGINT; returns a function that restores the handlers."""
    import signal

    def handler(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore
