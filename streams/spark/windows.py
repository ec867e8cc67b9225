"""The windows job's DataFrame logic: parse, deduplicate, signal, aggregate, pick rows.

Everything here works on a static DataFrame as well as on a stream, so the aggregation is
tested in batch mode and run by ``streams.spark.job`` on the Kafka source.

* :func:`parse_events` reads Kafka-shaped records (``topic``, ``value``) with one explicit
  schema, the union of the version-1 contract's fields (``streams.events``), and marks each
  record ``valid`` by the rules of its topic. Invalid records are dropped from the windows
  and counted; :func:`rejected_records` turns them into dead letters with the first rule
  each one breaks (the job's ``dead_letters`` query writes them to the dead-letter topic).
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
from streams.events import (
    ACTIONS,
    EVENT_TIME_MAX_MS,
    EVENT_TIME_MIN_MS,
    ID_MAX_CHARS,
    MAX_RECORD_BYTES,
    RANK_MAX,
    RATING_MAX,
    RATING_MIN,
    SCHEMA_VERSION,
    Topics,
)

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

_SOURCES = ("replay", "live")
# streams.events.ID_PATTERN's refused characters, in Java's regex syntax.
_ID_FORBIDDEN = "[\\x00-\\x1F\\x7F-\\x9F\\u2028\\u2029]"


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
            StructField("variant", StringType()),
            StructField("propensity", DoubleType()),
            StructField("din_score", DoubleType()),
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
            StructField("experiment", StringType()),
            StructField("items", ArrayType(item)),
            StructField("rank", LongType()),
        ]
    )


def _is_id(column: Column) -> Column:
    from pyspark.sql import functions as F

    trimmed = F.trim(column)
    return (
        column.isNotNull()
        & (F.length(trimmed) >= 1)
        & (F.length(trimmed) <= ID_MAX_CHARS)
        & ~column.rlike(_ID_FORBIDDEN)
    )


def _rejection(records: DataFrame, topics: Topics) -> tuple[DataFrame, Column]:
    """``records`` with the parsed struct ``e``, and the reason column: the first rule of
    the contract a record breaks, null for a valid record."""
    from pyspark.sql import functions as F

    text = F.col("value").cast("string")
    parsed = records.withColumn("bytes", F.length(F.col("value"))).withColumn(
        "e", F.from_json(text, event_schema())
    )
    ev = F.col("e")
    common = [
        (F.col("value").isNotNull(), "empty record (null value)"),
        (F.col("bytes") <= MAX_RECORD_BYTES, f"record exceeds the {MAX_RECORD_BYTES} limit"),
        # from_json reads text that is not JSON as a struct of nulls; this tells them apart.
        (ev.isNotNull() & F.json_object_keys(text).isNotNull(), "not a JSON object"),
        (
            ev.schema == SCHEMA_VERSION,
            f"missing or unsupported schema version (not {SCHEMA_VERSION})",
        ),
        (_is_id(ev.event_id), "event_id: not a valid id"),
        (
            ev.event_time.between(EVENT_TIME_MIN_MS, EVENT_TIME_MAX_MS),
            f"event_time: not epoch milliseconds from {EVENT_TIME_MIN_MS} to {EVENT_TIME_MAX_MS}",
        ),
        (_is_id(ev.user_id), "user_id: not a valid id"),
    ]
    interaction = [
        (_is_id(ev.item_id), "item_id: not a valid id"),
        (ev.action.isin(*ACTIONS), "action: not one of " + ", ".join(ACTIONS)),
        (
            ev.rating.isNull() | ev.rating.between(RATING_MIN, RATING_MAX),
            f"rating: not a finite number from {RATING_MIN} to {RATING_MAX}",
        ),
        (ev.source.isNull() | ev.source.isin(*_SOURCES), "source: not replay or live"),
    ]
    served = [
        (_is_id(ev.request_id), "request_id: not a valid id"),
        (ev.variant.isNotNull() & ev.model_version.isNotNull(), "variant or model_version missing"),
        (
            ev.items.isNotNull()
            & F.forall(
                ev.items,
                lambda x: (
                    _is_id(x.item_id)
                    & x.rank.between(1, RANK_MAX)
                    & x.score.isNotNull()
                    & ~F.isnan(x.score)
                    & x.reason.isNotNull()
                ),
            ),
            "items: missing, or an item breaks its rules",
        ),
    ]
    click = [
        (_is_id(ev.request_id), "request_id: not a valid id"),
        (_is_id(ev.item_id), "item_id: not a valid id"),
        (ev.rank.between(1, RANK_MAX), f"rank: not from 1 to {RANK_MAX}"),
    ]
    topic = F.col("topic")

    def first_broken(rules: list[tuple[Column, str]]) -> Column:
        reason = None
        for ok, why in rules:
            broken = ~F.coalesce(ok, F.lit(False))
            reason = F.when(broken, F.lit(why)) if reason is None else reason.when(broken, why)
        assert reason is not None
        return reason

    by_topic = (
        F.when(topic == topics.interactions, first_broken(interaction))
        .when(topic == topics.recommendations, first_broken(served))
        .when(topic == topics.clicks, first_broken(click))
        .otherwise(F.lit("topic outside the event contract"))
    )
    return parsed, F.coalesce(first_broken(common), by_topic)


def rejected_records(records: DataFrame, topics: Topics) -> DataFrame:
    """Kafka records (``topic``, ``partition``, ``offset``, ``key``, ``value``) that break
    the contract, as dead-letter records (``key``, ``value``) in the layout of
    ``streams.events.dead_letter``, with ``consumer: spark``."""
    from pyspark.sql import functions as F

    parsed, reason = _rejection(records, topics)
    rejected = parsed.withColumn("reason", reason).where(F.col("reason").isNotNull())
    body = F.struct(
        F.col("reason"),
        F.lit("spark").alias("consumer"),
        F.col("topic"),
        F.col("partition"),
        F.col("offset"),
        F.col("key").cast("string").alias("key"),
        F.base64(F.col("value")).alias("value_b64"),
        F.unix_millis(F.current_timestamp()).alias("rejected_at"),
    )
    return rejected.select(F.col("key"), F.to_json(body).alias("value"))


def parse_events(records: DataFrame, topics: Topics) -> DataFrame:
    """Kafka records (``topic``, ``value``) → one row per record with ``valid`` and fields.

    Output columns: topic, valid, event_id, user_id, item_id, action, event_time (epoch ms),
    ts (timestamp), item_ids (array: the served items of a recommendation, else [item_id]).
    """
    from pyspark.sql import functions as F

    parsed, reason = _rejection(records.select("topic", "value"), topics)
    ev = F.col("e")
    topic = F.col("topic")
    valid = reason.isNull()
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


def current_window_rows(
    batch: DataFrame, previous_clock: int | None, spec: WindowSpec
) -> DataFrame:
    """The rows of a batch's changed windows that ``foreachBatch`` needs in Python, with a
    ``window_end`` column (epoch ms): those of the current window as of the clock after the
    batch (``batch_clock``, ``current_window_end``) and those that carry the batch's newest
    event time, which tell the clock when no current-window row changed.

    Chosen in Spark: every event changes each of its windows (12 of an hour sliding every 5
    minutes, 24 of a day sliding every hour), and turning all of them into Python rows
    cost the job 2.7 times the CPU (docs/design.md, "The Spark windows job under live
    events").
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    # One window over the whole (small) batch; a constant key, as an empty partitionBy
    # logs a warning on every batch.
    newest = F.max("last_event_time").over(Window.partitionBy(F.lit(0)))
    clock = newest if previous_clock is None else F.greatest(F.lit(previous_clock), newest)
    # current_window_end in Spark's integer arithmetic: (a // s) * s is a - pmod(a, s).
    behind = clock - F.lit(spec.length_ms)
    end = behind - F.pmod(behind, F.lit(spec.slide_ms)) + spec.slide_ms + spec.length_ms
    framed = batch.withColumn("window_end", F.unix_millis(F.col("window.end")))
    framed = framed.withColumn("_newest", newest).withColumn("_end", end)
    chosen = (F.col("window_end") == F.col("_end")) | (F.col("last_event_time") == F.col("_newest"))
    return framed.filter(chosen).drop("_newest", "_end")


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
