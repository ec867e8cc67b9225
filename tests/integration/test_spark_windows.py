"""The Spark windows job against the real broker and Redis: exact window values in the
Feast online store, a restart from the checkpoints that counts nothing twice, and the same
aggregation on a static DataFrame. One SparkSession serves the whole module."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from feast import FeatureStore

from streamrec.infra.feast_store import apply_definitions, open_store
from streamrec.settings import Settings
from streams.backfill import read_log
from streams.events import (
    Click,
    Event,
    Interaction,
    RecommendationServed,
    RecommendedItem,
    Topics,
    encode,
)
from streams.producer import EventProducer
from streams.sinks import FeastFeatureSink
from streams.spark import windows as W
from streams.spark.jars import ensure_spark_jars
from streams.spark.job import (
    DEAD_LETTERS,
    ITEM_LONG,
    ITEM_SHORT,
    USER_INTERESTS,
    checkpoint_dir,
    run_spark_job,
)
from streams.spark.session import build_session
from tests.support import isolated_settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

T0 = 1_767_261_600_000  # 2026-01-01T10:00:00Z, an hour boundary
MIN = 60_000
HOUR = 60 * MIN
CATALOGUE = {"A": ["drama", "comedy"], "B": ["action"], "C": ["drama"]}

ITEM_FEATURES = [
    "item_windows_1h:trending_1h",
    "item_windows_1h:window_end_1h",
    "item_windows_24h:trending_24h",
    "item_windows_24h:impressions_24h",
    "item_windows_24h:clicks_24h",
    "item_windows_24h:ctr_24h",
    "item_windows_24h:window_end_24h",
]
USER_FEATURES = [
    "user_interests:interest_categories",
    "user_interests:interest_weights",
    "user_interests:interests_window_end",
]


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkSession]:
    session = build_session(isolated_settings(tmp_path_factory.mktemp("spark")))
    yield session
    session.stop()


def interaction(user: str, item: str, action: str, minutes: float, **kw: Any) -> Interaction:
    return Interaction(
        user_id=user, item_id=item, action=action, event_time=T0 + int(minutes * MIN), **kw
    )


def served(user: str, items: list[str], minutes: float) -> RecommendationServed:
    return RecommendationServed(
        user_id=user,
        request_id=f"r-{user}-{minutes}",
        variant="control",
        model_version="popularity",
        items=tuple(
            RecommendedItem(item_id=i, rank=n, score=1.0 / n, reason="popular")
            for n, i in enumerate(items, start=1)
        ),
        event_time=T0 + int(minutes * MIN),
    )


def click(user: str, item: str, minutes: float) -> Click:
    return Click(
        user_id=user,
        request_id=f"r-{user}-3",
        item_id=item,
        rank=1,
        event_time=T0 + int(minutes * MIN),
    )


# The first phase. Expected values are worked out by hand in the test below.
E1 = interaction("u1", "A", "view", 1)
E4 = interaction("u2", "B", "view", 50)
PHASE_ONE: list[Event] = [
    interaction("u1", "B", "cart", -120),  # inside the day, outside the hour
    E1,
    interaction("u1", "A", "click", 2),
    served("u1", ["A", "B", "C"], 3),
    click("u1", "A", 4),
    served("u2", ["A"], 10),
    interaction("u2", "A", "purchase", 20),
    E4,
    E1,  # a producer retry: the same event_id again
]
BAD_RECORDS = [
    ("interactions", b"not json"),
    ("interactions", b'{"schema": 2, "event_id": "x", "event_time": 1767261600000}'),
    (
        "clicks",
        b'{"schema": 1, "event_id": "y", "event_time": 1767261600000, "user_id": "u1", '
        b'"request_id": "r", "item_id": "A", "rank": 0}',
    ),
    (  # issue 19's poison pill: a rank past int32
        "clicks",
        b'{"schema": 1, "event_id": "z", "event_time": 1767261600000, "user_id": "u1", '
        b'"request_id": "r", "item_id": "A", "rank": 2147483648}',
    ),
]
# The first rule each bad record breaks, as the dead-letter reason says it.
BAD_REASONS = ["not a JSON object", "schema version", "rank", "rank"]


def produce(settings: Settings, events: list[Event], bad: Sequence[tuple[str, bytes]] = ()) -> None:
    topics = Topics(settings.topic_prefix)
    producer = EventProducer(settings.bootstrap_servers, topics)
    try:
        futures = [producer.send(e) for e in events]
        futures += [producer.send_raw(topics.prefix + t, b"u1", v) for t, v in bad]
        for f in futures:
            f.result(timeout=30)
    finally:
        producer.close()


def write_catalogue(settings: Settings) -> None:
    folder = settings.data_dir / "datasets" / "test"
    folder.mkdir(parents=True)
    table = pa.table(
        {
            "item_id": list(CATALOGUE),
            "title": [f"title {i}" for i in CATALOGUE],
            "categories": list(CATALOGUE.values()),
        }
    )
    pq.write_table(table, folder / "items.parquet")


def items(store: FeatureStore, ids: list[str]) -> dict[str, dict[str, Any]]:
    frame = store.get_online_features(
        features=ITEM_FEATURES, entity_rows=[{"item_id": i} for i in ids]
    ).to_dict()
    names = [f.split(":")[1] for f in ITEM_FEATURES]
    return {i: {n: frame[n][k] for n in names} for k, i in enumerate(ids)}


def users(store: FeatureStore, ids: list[str]) -> dict[str, dict[str, Any]]:
    frame = store.get_online_features(
        features=USER_FEATURES, entity_rows=[{"user_id": u} for u in ids]
    ).to_dict()
    names = [f.split(":")[1] for f in USER_FEATURES]
    return {u: {n: frame[n][k] for n in names} for k, u in enumerate(ids)}


def item_row(
    trend_1h: float | None,
    end_1h: int | None,
    trend_24h: float,
    imps: int,
    clicks: int,
    end_24h: int,
) -> dict[str, Any]:
    return {
        "trending_1h": trend_1h,
        "window_end_1h": end_1h,
        "trending_24h": trend_24h,
        "impressions_24h": imps,
        "clicks_24h": clicks,
        "ctr_24h": W.click_through_rate(clicks, imps),
        "window_end_24h": end_24h,
    }


@pytest.mark.timeout(600)  # three runs of four queries; slow on a shared 2-core host
def test_windows_reach_the_online_store_and_a_restart_counts_nothing_twice(
    spark: SparkSession, live_settings: Settings
) -> None:
    settings = live_settings
    write_catalogue(settings)
    store = open_store(settings)
    apply_definitions(store)
    sink = FeastFeatureSink(store)
    produce(settings, PHASE_ONE, BAD_RECORDS)

    first = run_spark_job(settings, sink, available_now=True, spark=spark)

    assert first.skipped == {}
    assert first.malformed == len(BAD_RECORDS)
    letters = [
        json.loads(value or b"{}")
        for batch in read_log(
            settings.bootstrap_servers, [Topics(settings.topic_prefix).dead_letters]
        )
        for *_, value in batch
    ]
    assert [letter["consumer"] for letter in letters] == ["spark"] * len(BAD_RECORDS)
    reasons = sorted(letter["reason"] for letter in letters)
    for expected in BAD_REASONS:
        assert any(expected in reason for reason in reasons), (expected, reasons)
    # Clock T0+50m: the hour window [T0-5m, T0+55m), the day window [T0-23h, T0+1h).
    end_1h, end_24h = T0 + 55 * MIN, T0 + HOUR
    assert items(store, ["A", "B", "C"]) == {
        # view 1 + click 2 + purchase 4; served twice, clicked once
        "A": item_row(7.0, end_1h, 7.0, 2, 1, end_24h),
        # the cart (3) two hours back counts for the day only
        "B": item_row(1.0, end_1h, 4.0, 1, 0, end_24h),
        # only served: the hour query reads interactions and never saw C
        "C": item_row(None, None, 0.0, 1, 0, end_24h),
    }
    assert users(store, ["u1", "u2"]) == {
        # A view (1) and click (2) split over drama and comedy, B cart (3) all action
        "u1": {
            "interest_categories": ["action", "comedy", "drama"],
            "interest_weights": [0.5, 0.25, 0.25],
            "interests_window_end": end_24h,
        },
        "u2": {
            "interest_categories": ["comedy", "drama", "action"],
            "interest_weights": [0.4, 0.4, 0.2],
            "interests_window_end": end_24h,
        },
    }

    # Phase two, after a stop: a new event an hour later and a retry of E4.
    produce(settings, [interaction("u1", "C", "purchase", 70), E4])
    second = run_spark_job(settings, sink, available_now=True, spark=spark)

    # Resumed from the checkpoints: only the two new records were read.
    assert second.input_rows == {ITEM_SHORT: 2, ITEM_LONG: 2, USER_INTERESTS: 2, DEAD_LETTERS: 2}
    assert second.malformed == len(BAD_RECORDS)  # the ledger total, not counted again
    for name in (ITEM_SHORT, ITEM_LONG, USER_INTERESTS):
        assert second.queries[name].last_batch_id > first.queries[name].last_batch_id
    # Clock T0+70m: hour window [T0+15m, T0+75m), day window [T0-22h, T0+2h). B's retry
    # was dropped as a duplicate, so B (like A) keeps its first-phase rows.
    after = items(store, ["A", "B", "C"])
    assert after["A"] == item_row(7.0, end_1h, 7.0, 2, 1, end_24h)
    assert after["B"] == item_row(1.0, end_1h, 4.0, 1, 0, end_24h)
    assert after["C"] == item_row(4.0, T0 + 75 * MIN, 4.0, 1, 0, T0 + 2 * HOUR)
    assert users(store, ["u1"])["u1"] == {
        "interest_categories": ["drama", "action", "comedy"],
        "interest_weights": [0.55, 0.3, 0.15],
        "interests_window_end": T0 + 2 * HOUR,
    }

    # A crash after our push but before Spark's commit: Spark runs the batch again, and
    # the ledger keeps it from being written twice.
    commits = checkpoint_dir(settings, ITEM_LONG) / "commits"
    last = max(int(p.name) for p in commits.iterdir() if p.name.isdigit())
    (commits / str(last)).unlink()
    (commits / f".{last}.crc").unlink(missing_ok=True)
    third = run_spark_job(settings, sink, available_now=True, spark=spark)
    assert third.queries[ITEM_LONG].skipped == second.queries[ITEM_LONG].skipped + 1
    assert items(store, ["A", "B", "C"]) == after


def test_rejected_records_say_why(spark: SparkSession) -> None:
    topics = Topics("static.")
    good = [(topics.prefix + e.topic, encode(e)[1]) for e in PHASE_ONE]
    records = [
        (topic, 0, offset, b"u1", value)
        for offset, (topic, value) in enumerate(
            good + [(topics.prefix + t, v) for t, v in BAD_RECORDS]
        )
    ]
    frame = spark.createDataFrame(
        records, "topic string, partition int, offset long, key binary, value binary"
    )
    letters = [json.loads(r["value"]) for r in W.rejected_records(frame, topics).collect()]
    assert [letter["offset"] for letter in letters] == list(
        range(len(good), len(good) + len(BAD_RECORDS))
    )
    for letter, expected in zip(letters, BAD_REASONS, strict=True):
        assert expected in letter["reason"] and letter["consumer"] == "spark"


def test_aggregation_on_a_static_frame(spark: SparkSession) -> None:
    topics = Topics("static.")
    records = [(topics.prefix + e.topic, encode(e)[1]) for e in PHASE_ONE]
    records += [(topics.prefix + t, v) for t, v in BAD_RECORDS]
    frame = spark.createDataFrame(records, "topic string, value binary")

    parsed = W.parse_events(frame, topics)
    assert parsed.where("not valid").count() == len(BAD_RECORDS)
    events = W.deduplicated(parsed, 900)
    short = W.item_window_totals(W.item_signals(events, topics), W.WindowSpec(3600, 300))
    end = W.current_window_end(T0 + 50 * MIN, W.WindowSpec(3600, 300))
    rows = short.selectExpr(
        "item_id", "trending", "impressions", "clicks", "unix_millis(window.end) AS e"
    )
    current = {r["item_id"]: r for r in rows.where(f"e = {end}").collect()}
    assert {i: (r["trending"], r["impressions"], r["clicks"]) for i, r in current.items()} == {
        "A": (7.0, 2, 1),
        "B": (1.0, 1, 0),
        "C": (0.0, 1, 0),
    }
    catalogue = spark.createDataFrame(
        list(CATALOGUE.items()), "item_id string, categories array<string>"
    )
    shares = W.user_category_shares(events, catalogue, topics, W.WindowSpec(86_400, 3600))
    day_end = T0 + HOUR
    got = {
        r["user_id"]: W.interest_vector(((s["category"], s["share"]) for s in r["shares"]), 2)
        for r in shares.where(f"unix_millis(window.end) = {day_end}").collect()
    }
    assert got == {
        "u1": (["action", "comedy"], [0.5, 0.25]),
        "u2": (["comedy", "drama"], [0.4, 0.4]),
    }


def _python_choice(rows: Sequence[Any], previous: int | None, spec: W.WindowSpec) -> list[Any]:
    """What foreachBatch chose when it collected every changed window's row."""
    clock = W.batch_clock(rows, previous)
    if clock is None:
        return []
    end = W.current_window_end(clock, spec)
    return sorted(r["item_id"] for r in rows if r["window_end"] == end)


def test_spark_chooses_the_current_window_rows_python_chose(spark: SparkSession) -> None:
    from pyspark.sql import functions as F

    topics = Topics("static.")
    spec = W.WindowSpec(3600, 300)
    phase = [*PHASE_ONE, interaction("u3", "C", "view", 57), interaction("u3", "B", "view", 61)]
    frame = spark.createDataFrame(
        [(topics.prefix + e.topic, encode(e)[1]) for e in phase], "topic string, value binary"
    )
    events = W.deduplicated(W.parse_events(frame, topics), 900)
    windows = W.item_window_totals(W.item_signals(events, topics), spec)
    every = windows.withColumn("window_end", F.unix_millis(F.col("window.end"))).collect()
    assert len(every) > 3 * len({r["item_id"] for r in every})  # each item in many windows
    # The clock from the batch alone, from an older clock, and from a clock past the
    # batch's newest event (then no row of the batch may be current).
    for previous in (None, T0 - HOUR, T0 + 59 * MIN, T0 + 3 * HOUR):
        chosen = W.current_window_rows(windows, previous, spec).collect()
        assert len(chosen) < len(every)
        assert W.batch_clock(chosen, previous) == W.batch_clock(every, previous)
        clock = W.batch_clock(every, previous)
        assert clock is not None
        end = W.current_window_end(clock, spec)
        current = sorted(r["item_id"] for r in chosen if r["window_end"] == end)
        assert current == _python_choice(every, previous, spec)
    # The newest event (B at 61 minutes) is the clock; its current window ends at 65.
    chosen = W.current_window_rows(windows, None, spec).collect()
    assert W.batch_clock(chosen, None) == T0 + 61 * MIN
    assert "C" in _python_choice(chosen, None, spec)  # C at 57 is in the window [5, 65)


def test_current_window_and_bad_specs() -> None:
    hour = W.WindowSpec(3600, 300)
    assert W.current_window_end(T0, hour) == T0 + 5 * MIN  # a boundary belongs to the next
    assert W.current_window_end(T0 + 50 * MIN, hour) == T0 + 55 * MIN
    assert W.current_window_end(T0 + 50 * MIN, W.WindowSpec(86_400, 3600)) == T0 + HOUR
    with pytest.raises(ValueError, match="longer than"):
        W.WindowSpec(300, 3600)


def test_jars_are_used_offline_once_fetched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = isolated_settings(tmp_path)
    jars = ensure_spark_jars(settings)
    monkeypatch.setenv("PATH", str(tmp_path))  # no mvn, no network tools
    assert ensure_spark_jars(settings) == jars
    assert any(p.name == "spark-sql-kafka-0-10_2.13-4.2.0.jar" for p in jars)
