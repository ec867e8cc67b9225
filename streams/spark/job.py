"""`streamrec spark`: the sliding-window queries, from Kafka to the Feast online store.

Three streaming queries, each with its own checkpoint under
``state_dir/spark/<topic prefix>/<query>`` (see ``checkpoint_dir``):

* ``item_windows_short`` — interactions → trending score per item over the short window
  (default 1 hour sliding every 5 minutes) → push source ``item_windows_1h_push``;
* ``item_windows_long`` — interactions, served recommendations and clicks → trending score,
  impressions, clicks and click-through rate per item over the long window (default 24
  hours sliding every hour) → ``item_windows_24h_push``; it also counts malformed records
  of all three topics (the other queries drop the same records without counting them);
* ``user_interests`` — interactions joined with the catalogue (a static broadcast table
  from ``data_dir/datasets/<source>/items.parquet``) → each user's category weights over the long
  window → ``user_interests_push``; skipped, with a warning, when there is no catalogue.

Results are written by ``foreachBatch`` in ``update`` mode: only the windows a batch changed
are emitted, and of those only the current window (see ``windows.current_window_end``) is
pushed; Spark chooses those rows before they reach Python (``windows.current_window_rows``).
An entity that sees no new event keeps its last pushed value; its ``window_end`` feature
says how old that value is.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamrec.settings import Settings
from streams.events import Topics
from streams.sinks import FeatureSink
from streams.spark import windows as W
from streams.spark.ledger import BatchLedger, LedgerState

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming import StreamingQuery

    from streams.spark.metrics import SparkJobMetrics

logger = logging.getLogger(__name__)

ITEM_SHORT_PUSH = "item_windows_1h_push"
ITEM_LONG_PUSH = "item_windows_24h_push"
USER_INTERESTS_PUSH = "user_interests_push"

ITEM_SHORT = "item_windows_short"
ITEM_LONG = "item_windows_long"
USER_INTERESTS = "user_interests"
DEAD_LETTERS = "dead_letters"
QUERIES = (ITEM_SHORT, ITEM_LONG, USER_INTERESTS, DEAD_LETTERS)

Columns = dict[str, list[Any]]


class SparkJobError(RuntimeError):
    """A streaming query stopped with an error."""


@dataclass(frozen=True)
class JobConfig:
    """What the queries compute; read from settings, overridable in tests."""

    short: W.WindowSpec
    long: W.WindowSpec
    watermark_seconds: int
    interest_top: int
    trigger_seconds: float
    max_offsets_per_trigger: int

    @classmethod
    def from_settings(cls, settings: Settings) -> JobConfig:
        return cls(
            short=W.WindowSpec(
                settings.spark_short_window_seconds, settings.spark_short_slide_seconds
            ),
            long=W.WindowSpec(
                settings.spark_long_window_seconds, settings.spark_long_slide_seconds
            ),
            watermark_seconds=settings.spark_watermark_seconds,
            interest_top=settings.spark_interest_categories,
            trigger_seconds=settings.spark_trigger_seconds,
            max_offsets_per_trigger=settings.spark_max_offsets_per_trigger,
        )


_SAFE_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def prefix_folder(topic_prefix: str) -> str:
    """The folder name for one topic prefix: the prefix itself when it is a plain file name,
    else its safe characters plus a short hash of the prefix, so two prefixes never share a
    folder (and so never resume each other's Kafka offsets)."""
    if _SAFE_PREFIX.fullmatch(topic_prefix):
        return topic_prefix
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", topic_prefix).strip(".") or "prefix"
    digest = hashlib.sha256(topic_prefix.encode()).hexdigest()[:10]
    return f"{safe}~{digest}"


def checkpoint_dir(settings: Settings, query: str) -> Path:
    """One query's checkpoint (Kafka offsets, window state, batch ledger), kept per topic
    prefix: two projects, or a test and the demo, sharing a state directory each resume
    their own offsets."""
    return settings.state_dir / "spark" / prefix_folder(settings.topic_prefix) / query


class WindowWriter:
    """The ``foreachBatch`` function of one query: current-window rows → one Feast push.

    A batch id the ledger already holds is skipped, so a batch Spark replays after a crash
    is not written twice; the Feast row time is the window end, moved past the last push.
    """

    def __init__(
        self,
        name: str,
        ledger: BatchLedger,
        sink: FeatureSink,
        push_source: str,
        spec: W.WindowSpec,
        to_columns: Callable[[Sequence[Any], int, int], Columns],
    ) -> None:
        self.name = name
        self.ledger = ledger
        self.sink = sink
        self.push_source = push_source
        self.spec = spec
        self.to_columns = to_columns

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        if self.ledger.written(batch_id):
            # Still run the batch to its end: Spark 4 refuses to commit a batch whose
            # stateful partitions were not all computed (STATE_STORE_COMMIT_VALIDATION_FAILED).
            batch.write.format("noop").mode("overwrite").save()
            logger.info("%s: batch %d was written before a restart; skipped", self.name, batch_id)
            self.ledger.skip()
            return
        rows = W.current_window_rows(batch, self.ledger.state.clock_ms, self.spec).collect()
        clock = W.batch_clock(rows, self.ledger.state.clock_ms)
        stamp: int | None = None
        current: list[Any] = []
        if clock is not None and rows:
            end = W.current_window_end(clock, self.spec)
            current = [r for r in rows if r["window_end"] == end]
            if current:
                stamp = self.ledger.next_stamp(end)
                self.sink.push(self.push_source, self.to_columns(current, end, stamp))
        self.ledger.commit(batch_id, clock, stamp, len(current))
        logger.debug("%s: batch %d pushed %d rows", self.name, batch_id, len(current))


def item_short_columns(rows: Sequence[Any], end: int, stamp: int) -> Columns:
    return {
        "item_id": [r["item_id"] for r in rows],
        "trending_1h": [float(r["trending"]) for r in rows],
        "window_end_1h": [end] * len(rows),
        "event_timestamp": [stamp] * len(rows),
    }


def item_long_columns(rows: Sequence[Any], end: int, stamp: int) -> Columns:
    return {
        "item_id": [r["item_id"] for r in rows],
        "trending_24h": [float(r["trending"]) for r in rows],
        "impressions_24h": [int(r["impressions"]) for r in rows],
        "clicks_24h": [int(r["clicks"]) for r in rows],
        "ctr_24h": [W.click_through_rate(int(r["clicks"]), int(r["impressions"])) for r in rows],
        "window_end_24h": [end] * len(rows),
        "event_timestamp": [stamp] * len(rows),
    }


def user_interest_columns(top: int) -> Callable[[Sequence[Any], int, int], Columns]:
    def columns(rows: Sequence[Any], end: int, stamp: int) -> Columns:
        vectors = [
            W.interest_vector(((s["category"], float(s["share"])) for s in r["shares"]), top)
            for r in rows
        ]
        return {
            "user_id": [r["user_id"] for r in rows],
            "interest_categories": [v[0] for v in vectors],
            "interest_weights": [v[1] for v in vectors],
            "interests_window_end": [end] * len(rows),
            "event_timestamp": [stamp] * len(rows),
        }

    return columns


def kafka_records(
    spark: SparkSession, settings: Settings, topics: Sequence[str], config: JobConfig
) -> DataFrame:
    """Spark's own Kafka source over ``topics``, from the earliest offset on first start
    (a restart resumes from the checkpoint's offsets instead)."""
    reader = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.bootstrap_servers)
        .option("subscribe", ",".join(topics))
        .option("startingOffsets", "earliest")
        .option("maxOffsetsPerTrigger", str(config.max_offsets_per_trigger))
    )
    for name, value in kafka_java_security(settings).items():
        reader = reader.option(f"kafka.{name}", value)
    return reader.load()


# The JAAS login module of each SASL mechanism, for the Java Kafka client Spark runs.
_LOGIN_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}


def kafka_java_security(settings: Settings) -> dict[str, str]:
    """The Java client's form of ``settings.kafka_security()``: none on PLAINTEXT."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    config: dict[str, str] = {"security.protocol": protocol}
    password = settings.kafka_sasl_password
    if protocol.startswith("SASL") and password is not None:
        module = _LOGIN_MODULES[settings.kafka_sasl_mechanism]
        secret = password.get_secret_value().replace("\\", "\\\\").replace('"', '\\"')
        user = settings.kafka_sasl_username.replace('"', '\\"')
        config["sasl.mechanism"] = settings.kafka_sasl_mechanism
        config["sasl.jaas.config"] = f'{module} required username="{user}" password="{secret}";'
    if settings.kafka_ssl_ca_location:
        config["ssl.truststore.type"] = "PEM"
        config["ssl.truststore.location"] = settings.kafka_ssl_ca_location
    return config


@dataclass
class RunningQuery:
    name: str
    query: StreamingQuery
    ledger: BatchLedger
    counts_malformed: bool = False

    def absorb_progress(self) -> None:
        """Add the malformed-record counts of the batches reported since the last call."""
        if not self.counts_malformed:
            return
        for progress in self.query.recentProgress:
            metrics = (progress["observedMetrics"] or {}).get("parse")
            malformed = int(metrics["malformed"] or 0) if metrics is not None else 0
            if self.ledger.count_malformed(int(progress["batchId"]), malformed) and malformed:
                logger.warning(
                    "%s: dropped %d malformed records in batch %d",
                    self.name,
                    malformed,
                    progress["batchId"],
                )


@dataclass
class SparkJobReport:
    queries: dict[str, LedgerState] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # query → why it did not run
    input_rows: dict[str, int] = field(default_factory=dict)  # Kafka records read, this run

    @property
    def malformed(self) -> int:
        return sum(state.malformed for state in self.queries.values())

    def summary(self) -> str:
        lines = []
        for name, state in self.queries.items():
            s = asdict(state)
            lines.append(
                f"{name}: {s['batches']} batches, {s['rows']} rows pushed, "
                f"{s['skipped']} replayed batches skipped, last batch {s['last_batch_id']}"
            )
        lines.append(f"malformed records dropped: {self.malformed}")
        lines.extend(f"{name}: skipped ({why})" for name, why in self.skipped.items())
        return "\n".join(lines)


def start_queries(
    spark: SparkSession,
    settings: Settings,
    sink: FeatureSink,
    *,
    available_now: bool,
    config: JobConfig | None = None,
) -> tuple[list[RunningQuery], dict[str, str]]:
    """Start the window queries; returns them and the queries skipped, with the reason."""
    config = config or JobConfig.from_settings(settings)
    topics = Topics(settings.topic_prefix)
    running: list[RunningQuery] = []
    skipped: dict[str, str] = {}

    def start(
        name: str, frame: DataFrame, writer_for: Callable[[BatchLedger], WindowWriter]
    ) -> RunningQuery:
        checkpoint = checkpoint_dir(settings, name)
        ledger = BatchLedger(checkpoint)
        writer = frame.writeStream.outputMode("update").foreachBatch(writer_for(ledger))
        writer = writer.queryName(f"{settings.topic_prefix}{name}").option(
            "checkpointLocation", str(checkpoint)
        )
        if available_now:
            writer = writer.trigger(availableNow=True)
        else:
            writer = writer.trigger(processingTime=f"{config.trigger_seconds} seconds")
        return RunningQuery(name, writer.start(), ledger)

    def events(names: Sequence[str], observe: bool = False) -> DataFrame:
        parsed = W.parse_events(kafka_records(spark, settings, names, config), topics)
        if observe:
            parsed = W.malformed_metrics(parsed)
        return W.deduplicated(parsed, config.watermark_seconds)

    short = W.item_window_totals(
        W.item_signals(events([topics.interactions]), topics), config.short
    )
    running.append(
        start(
            ITEM_SHORT,
            short,
            lambda ledger: WindowWriter(
                ITEM_SHORT, ledger, sink, ITEM_SHORT_PUSH, config.short, item_short_columns
            ),
        )
    )
    all_topics = [topics.interactions, topics.recommendations, topics.clicks]
    long = W.item_window_totals(
        W.item_signals(events(all_topics, observe=True), topics), config.long
    )
    long_query = start(
        ITEM_LONG,
        long,
        lambda ledger: WindowWriter(
            ITEM_LONG, ledger, sink, ITEM_LONG_PUSH, config.long, item_long_columns
        ),
    )
    long_query.counts_malformed = True
    running.append(long_query)

    # Records the windows drop go to the dead-letter topic with their reason, through
    # Spark's own Kafka sink (at least once: a restart may send a record's letter again).
    checkpoint = checkpoint_dir(settings, DEAD_LETTERS)
    rejected = W.rejected_records(kafka_records(spark, settings, all_topics, config), topics)
    letters = (
        rejected.writeStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.bootstrap_servers)
        .option("topic", topics.dead_letters)
        .option("checkpointLocation", str(checkpoint))
        .queryName(f"{settings.topic_prefix}{DEAD_LETTERS}")
    )
    letters = (
        letters.trigger(availableNow=True)
        if available_now
        else letters.trigger(processingTime=f"{config.trigger_seconds} seconds")
    )
    running.append(RunningQuery(DEAD_LETTERS, letters.start(), BatchLedger(checkpoint)))

    paths = W.catalogue_paths(settings.data_dir)
    if not paths:
        why = f"no catalogue (items.parquet) under {settings.data_dir / 'log'}"
        logger.warning("user-interest query skipped: %s", why)
        skipped[USER_INTERESTS] = why
    else:
        catalogue = W.load_catalogue(spark, paths)
        interests = W.user_category_shares(
            events([topics.interactions]), catalogue, topics, config.long
        )
        running.append(
            start(
                USER_INTERESTS,
                interests,
                lambda ledger: WindowWriter(
                    USER_INTERESTS,
                    ledger,
                    sink,
                    USER_INTERESTS_PUSH,
                    config.long,
                    user_interest_columns(config.interest_top),
                ),
            )
        )
    return running, skipped


def _raise_failed(running: Sequence[RunningQuery]) -> None:
    for r in running:
        error = r.query.exception()
        if error is not None:
            raise SparkJobError(f"Spark query {r.name} failed: {error}") from error


def run_spark_job(
    settings: Settings,
    sink: FeatureSink,
    *,
    available_now: bool = False,
    stop: threading.Event | None = None,
    spark: SparkSession | None = None,
    config: JobConfig | None = None,
    metrics: SparkJobMetrics | None = None,
) -> SparkJobReport:
    """Run the window queries until ``stop`` is set (or, with ``available_now``, until the
    topics' current end is processed), then stop them and report."""
    from streams.spark.session import build_session

    spark = spark or build_session(settings)
    stop = stop or threading.Event()
    running, skipped = start_queries(
        spark, settings, sink, available_now=available_now, config=config
    )
    try:
        if available_now:
            for r in running:
                r.query.awaitTermination()
        else:
            while not stop.wait(1.0):
                _raise_failed(running)
                for r in running:
                    r.absorb_progress()
                if metrics is not None:
                    metrics.absorb(running)
                if not any(r.query.isActive for r in running):
                    break
        _raise_failed(running)
    finally:
        for r in running:
            if r.query.isActive:
                r.query.stop()
    for r in running:
        r.absorb_progress()
    return SparkJobReport(
        queries={r.name: r.ledger.state for r in running},
        skipped=skipped,
        input_rows={
            r.name: sum(int(p["numInputRows"]) for p in r.query.recentProgress) for r in running
        },
    )
