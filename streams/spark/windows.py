"""The windows job's DataFrame logic: parse, deduplicate, signal, aggregate, pick rows.

Everything here works on a static DataFrame as well as on a stream, so the aggregation is
tested in batch mode and run by ``streams.spark.job`` on the Kafka source.

* :func:`parse_events` reads Kafka-shaped records (``topic``, ``value``) with one explicit
  schema, the union of the version-1 contract's fields (``streams.events``), and marks each
  record ``valid`` by the rules of its topic. Invalid records are dropped from the windows
  and counted; the Faust worker dead-letters the same records with a reason.
* :func:`item_signals` turns interactions, served recommendations and clicks into one row per
  (event, item): a trending weight, an impression and a click.
* :func:`item_window_totals` and :func:`user_category_shares` are the sliding-window
  aggregates (event-time watermark, ``update`` output in the job).
* :func:`current_window_end` chooses which window the online store shows: the trailing
  window that contains the job's event-time clock (the newest event time seen so far).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamrec.paths import ITEMS_FILE, datasets_dir
from streams.events import ACTIONS, MAX_RECORD_BYTES, SCHEMA_VERSION, Topics

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession
    from pyspark.sql.types import StructType

# How much one interaction adds to an item's trending score: stronger intent counts more.
ACTION_WEIGHTS: dict[str, float] = {
    "view": 1.0,
    "click": 2.0,
    "rate": 2.0,
    "cart": 3.0,
    "purchase": 4.0,
}
assert set(ACTION_WEIGHTS) == set(ACTIONS)

# Bounds of streams.events (Id, EventTimeMs, Interaction.rating): the same rules, in Spark.
_MAX_ID = 256
_MIN_EVENT_TIME_MS = 631_152_000_000
_MAX_EVENT_TIME_MS = 4_102_444_800_000
_SOURCES = ("replay", "live")


@dataclass(frozen=True)
class WindowSpec:
    """A sliding event-time window: ``length`` long, a new one every ``slide``.

    Windows start at multiples of ``slide`` since the epoch (Spark's default alignment).
    """

    length_seconds: int
    slide_seconds: int

    def __post_init__(self) -> None:
        if self.length_seconds <= 0 or self.slide_seconds <= 0:
            raise ValueError(f"window and slide must be positive: {self}")
        if self.slide_seconds > self.length_seconds:
            raise ValueError(
                f"a slide of {self.slide_seconds}s is longer than its {self.length_seconds}s "
                "window: events between windows would be lost"
            )

    @property
    def length_ms(self) -> int:
        return self.length_seconds * 1000

    @property
    def slide_ms(self) -> int:
        return self.slide_seconds * 1000


def current_window_end(clock_ms: int, spec: WindowSpec) -> int:
    """End (epoch ms, exclusive) of the earliest-ending window that contains ``clock_ms``.

    That window covers the ``length`` of event time up to the clock's slide boundary: the
    trailing window as of the newest event, which is what "trending in the last hour" means.
    """
    first = (clock_ms - spec.length_ms) // spec.slide_ms + 1
    return first * spec.slide_ms + spec.length_ms


def event_schema() -> StructType:
    """Every field of the version-1 events in one struct; each topic uses its own subset."""
    from pyspark.sql.types import (
        ArrayType,
        DoubleType,
        LongType,
        StringType,
        StructField,
        StructType,
    )

    item = StructType(
        [
            StructField("item_id", StringType()),
            StructField("rank", LongType()),
            StructField("score", DoubleType()),
            StructField("reason", StringType()),
        ]
    )
    return StructType(
        [
            StructField("event_id", StringType()),
            StructField("schema", LongType()),
            StructField("event_time", LongType()),
            StructField("user_id", StringType()),
            StructField("item_id", StringType()),
            StructField("action", StringType()),
            StructField("rating", DoubleType()),
            StructField("source", StringType()),
            StructField("request_id", StringType()),
            StructField("variant", StringType()),
            StructField("model_version", StringType()),
            StructField("items", ArrayType(item)),
            StructField("rank", LongType()),
        ]
    )


def _is_id(column: Column) -> Column:
    from pyspark.sql import functions as F

    trimmed = F.trim(column)
    return column.isNotNull() & (F.length(trimmed) >= 1) & (F.length(trimmed) <= _MAX_ID)


def parse_events(records: DataFrame, topics: Topics) -> DataFrame:
    """Kafka records (``topic``, ``value``) → one row per record with ``valid`` and fields.

    Output columns: topic, valid, event_id, user_id, item_id, action, event_time (epoch ms),
    ts (timestamp), item_ids (array: the served items of a recommendation, else [item_id]).
    """
    from pyspark.sql import functions as F

    text = F.col("value").cast("string")
    e = F.from_json(text, event_schema()).alias("e")
    parsed = records.select(
        F.col("topic"), F.length(F.col("value")).alias("bytes"), F.col("value"), e
    )
    ev = F.col("e")
    common = (
        F.col("value").isNotNull()
        & (F.col("bytes") <= MAX_RECORD_BYTES)
        & ev.isNotNull()
        & _is_id(ev.event_id)
        & (ev.schema == SCHEMA_VERSION)
        & ev.event_time.between(_MIN_EVENT_TIME_MS, _MAX_EVENT_TIME_MS)
        & _is_id(ev.user_id)
    )
    interaction = (
        _is_id(ev.item_id)
        & ev.action.isin(*ACTIONS)
        & (ev.rating.isNull() | ev.rating.between(0.0, 10.0))
        & (ev.source.isNull() | ev.source.isin(*_SOURCES))
    )
    served = (
        _is_id(ev.request_id)
        & ev.variant.isNotNull()
        & ev.model_version.isNotNull()
        & ev.items.isNotNull()
        & F.forall(
            ev.items,
            lambda x: (
                _is_id(x.item_id) & (x.rank >= 1) & x.score.isNotNull() & x.reason.isNotNull()
            ),
        )
    )
    click = _is_id(ev.request_id) & _is_id(ev.item_id) & (ev.rank >= 1)
    topic = F.col("topic")
    by_topic = (
        F.when(topic == topics.interactions, interaction)
        .when(topic == topics.recommendations, served)
        .when(topic == topics.clicks, click)
        .otherwise(F.lit(False))
    )
    valid = F.coalesce(common & by_topic, F.lit(False))
    item_ids = F.when(
        topic == topics.recommendations, F.transform(ev.items, lambda x: F.trim(x.item_id))
    ).otherwise(F.array(F.trim(ev.item_id)))
    return parsed.select(
        topic,
        valid.alias("valid"),
        F.trim(ev.event_id).alias("event_id"),
        F.trim(ev.user_id).alias("user_id"),
        F.trim(ev.item_id).alias("item_id"),
        ev.action.alias("action"),
        ev.event_time.alias("event_time"),
        F.timestamp_millis(ev.event_time).alias("ts"),
        item_ids.alias("item_ids"),
    )


def malformed_metrics(parsed: DataFrame) -> DataFrame:
    """``parsed`` observed as "parse": per micro-batch counts of records and invalid ones."""
    from pyspark.sql import functions as F

    return parsed.observe(
        "parse",
        F.count(F.lit(1)).alias("records"),
        F.sum(F.when(F.col("valid"), 0).otherwise(1)).alias("malformed"),
    )


def deduplicated(parsed: DataFrame, watermark_seconds: int) -> DataFrame:
    """Valid events only, with the event-time watermark, each ``event_id`` once per topic.

    A producer retry can write an event twice; dropping repeats within the watermark keeps
    the windows counting it once (the Faust worker deduplicates by event_id too).
    """
    from pyspark.sql import functions as F

    valid = parsed.where(F.col("valid"))
    if not valid.isStreaming:  # a static frame has no watermark: plain dropDuplicates
        return valid.dropDuplicates(["topic", "event_id"])
    return valid.withWatermark("ts", f"{watermark_seconds} seconds").dropDuplicatesWithinWatermark(
        ["topic", "event_id"]
    )


def item_signals(events: DataFrame, topics: Topics) -> DataFrame:
    """One row per (event, item): weight (trending), impression and click (0 or 1)."""
    from pyspark.sql import functions as F

    weights = F.create_map(*[F.lit(x) for pair in ACTION_WEIGHTS.items() for x in pair])
    topic = F.col("topic")
    return events.select(
        F.col("ts"),
        F.col("event_time"),
        F.explode(F.col("item_ids")).alias("item_id"),
        F.when(topic == topics.interactions, F.element_at(weights, F.col("action")))
        .otherwise(F.lit(0.0))
        .alias("weight"),
        (topic == topics.recommendations).cast("long").alias("impression"),
        (topic == topics.clicks).cast("long").alias("click"),
    )


def _window(spec: WindowSpec) -> Column:
    from pyspark.sql import functions as F

    return F.window(F.col("ts"), f"{spec.length_seconds} seconds", f"{spec.slide_seconds} seconds")


def item_window_totals(signals: DataFrame, spec: WindowSpec) -> DataFrame:
    """Per (window, item): trending score, impressions, clicks, newest event time."""
    from pyspark.sql import functions as F

    return signals.groupBy(_window(spec), F.col("item_id")).agg(
        F.sum("weight").alias("trending"),
        F.sum("impression").alias("impressions"),
        F.sum("click").alias("clicks"),
        F.max("event_time").alias("last_event_time"),
    )


def user_category_shares(
    events: DataFrame, catalogue: DataFrame, topics: Topics, spec: WindowSpec
) -> DataFrame:
    """Per (window, user): the (category, share) of every interaction in the window.

    An interaction spreads its action weight evenly over its item's categories. The whole
    list is kept (not a per-category sum) because ``update`` output emits only changed
    rows, and a user's vector needs every category of the window, changed or not.
    """
    from pyspark.sql import functions as F

    weights = F.create_map(*[F.lit(x) for pair in ACTION_WEIGHTS.items() for x in pair])
    interactions = events.where(F.col("topic") == topics.interactions)
    joined = interactions.join(F.broadcast(catalogue), on="item_id", how="inner")
    shares = joined.select(
        F.col("ts"),
        F.col("event_time"),
        F.col("user_id"),
        F.explode(F.col("categories")).alias("category"),
        (F.element_at(weights, F.col("action")) / F.size(F.col("categories"))).alias("share"),
    )
    return shares.groupBy(_window(spec), F.col("user_id")).agg(
        F.collect_list(F.struct(F.col("category"), F.col("share"))).alias("shares"),
        F.max("event_time").alias("last_event_time"),
    )


def catalogue_paths(data_dir: Path) -> list[Path]:
    """Catalogues of the prepared datasets: ``<data_dir>/datasets/<source>/items.parquet``."""
    folder = datasets_dir(data_dir)
    return sorted(folder.glob(f"*/{ITEMS_FILE}")) if folder.is_dir() else []


def load_catalogue(spark: SparkSession, paths: Sequence[Path]) -> DataFrame:
    """(item_id, categories) of every catalogued item with at least one category."""
    from pyspark.sql import functions as F

    frame = spark.read.parquet(*[str(p) for p in paths]).select("item_id", "categories")
    return (
        frame.where(F.col("categories").isNotNull() & (F.size("categories") > 0))
        .dropDuplicates(["item_id"])
        .select(F.col("item_id"), F.array_distinct("categories").alias("categories"))
    )


def batch_clock(rows: Iterable[Any], previous: int | None) -> int | None:
    """The event-time clock after a batch: the newest event time seen so far."""
    newest = max((int(r["last_event_time"]) for r in rows), default=None)
    if newest is None:
        return previous
    return newest if previous is None else max(previous, newest)


def interest_vector(shares: Iterable[tuple[str, float]], top: int) -> tuple[list[str], list[float]]:
    """The ``top`` categories by summed share, weights normalised over all categories.

    Ties break by category name so the vector is deterministic.
    """
    totals: dict[str, float] = defaultdict(float)
    for category, share in shares:
        totals[category] += share
    total = math.fsum(totals.values())
    if total <= 0:
        return [], []
    ordered = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return [c for c, _ in ordered], [round(v / total, 9) for _, v in ordered]


def click_through_rate(clicks: int, impressions: int) -> float:
    """Clicks per impression in a window, capped at 1 (a click can outlive its impression's
    window) and 0 with no impressions."""
    if impressions <= 0:
        return 0.0
    return min(1.0, clicks / impressions)
