"""The archiver on the real broker: Kafka topics → Parquet parts, exactly once on disk."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from confluent_kafka import Consumer, TopicPartition

from streamrec.settings import Settings
from streams.archiver import (
    Archiver,
    archived_ranges,
    read_clicks,
    read_interactions,
    read_recommendations,
    topic_dir,
)
from streams.events import (
    Click,
    Interaction,
    RecommendationServed,
    RecommendedItem,
    Topics,
)
from streams.producer import EventProducer

pytestmark = pytest.mark.integration
T0 = 1_700_000_000_000


def _produce(settings: Settings) -> tuple[list[Interaction], RecommendationServed, Click]:
    topics = Topics(settings.topic_prefix)
    interactions = [
        Interaction(
            user_id=f"u{n % 4}",
            item_id=f"i{n % 9}",
            action="rate" if n % 3 else "view",
            rating=4.0 if n % 3 else None,
            event_time=T0 + n * 1000,
            source="replay",
        )
        for n in range(40)
    ]
    served = RecommendationServed(
        user_id="u1",
        request_id="r1",
        variant="popularity",
        model_version="fallback",
        event_time=T0 + 50_000,
        items=(
            RecommendedItem(item_id="i3", rank=1, score=0.9, reason="popular", din_score=1.25),
            RecommendedItem(item_id="i4", rank=2, score=0.5, reason="popular"),
        ),
    )
    click = Click(user_id="u1", request_id="r1", item_id="i3", rank=1, event_time=T0 + 51_000)
    with EventProducer(settings.bootstrap_servers, topics) as producer:
        futures = [producer.send(event) for event in interactions]
        futures.append(producer.send(interactions[7]))  # a redelivered event: a new record
        futures.append(producer.send_raw(topics.interactions, b"u1", b"{not json"))
        futures.append(producer.send(served))
        futures.append(producer.send(click))
        for future in futures:
            future.result(timeout=30)
    return interactions, served, click


def _committed(settings: Settings, topic: str) -> dict[int, int]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": f"{settings.topic_prefix}archiver",
        }
    )
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        return {tp.partition: tp.offset for tp in consumer.committed(partitions, timeout=30)}
    finally:
        consumer.close()


def _reset_offsets(settings: Settings, topic: str) -> None:
    """Commit offset 0 everywhere: the state of an archiver killed after writing its files
    but before committing their offsets."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": f"{settings.topic_prefix}archiver",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.commit(
            offsets=[TopicPartition(topic, p, 0) for p in range(settings.topic_partitions)],
            asynchronous=False,
        )
    finally:
        consumer.close()


def _files(settings: Settings, topic: str) -> dict[str, bytes]:
    folder = topic_dir(settings.data_dir, topic)
    return {path.name: path.read_bytes() for path in sorted(folder.glob("*.parquet"))}


def test_archive_once_writes_the_log_exactly_once(live_settings: Settings) -> None:
    settings = live_settings
    topics = Topics(settings.topic_prefix)
    interactions, served, click = _produce(settings)

    first = Archiver(settings).run_once()
    assert first.records[topics.interactions] == 42
    assert first.skipped[topics.interactions] == 1  # the malformed record, counted
    assert first.rows_written[topics.interactions] == 41  # the redelivery is a record
    assert first.rows_written[topics.recommendations] == 1
    assert first.rows_written[topics.clicks] == 1

    log = read_interactions(settings.data_dir, settings.topic_prefix)
    assert log.column_names[:9] == [
        "event_id",
        "event_time",
        "user_id",
        "item_id",
        "action",
        "rating",
        "source",
        "kafka_partition",
        "kafka_offset",
    ]
    expected = sorted(interactions, key=lambda e: e.event_time)
    assert log["event_id"].to_pylist() == [e.event_id for e in expected]
    assert log["event_time"].to_pylist() == [e.event_time for e in expected]
    assert log["user_id"].to_pylist() == [e.user_id for e in expected]
    assert log["item_id"].to_pylist() == [e.item_id for e in expected]
    assert log["rating"].to_pylist() == [e.rating for e in expected]
    until = read_interactions(settings.data_dir, settings.topic_prefix, until_ms=T0 + 10_000)
    assert until.num_rows == 10

    recommendations = read_recommendations(settings.data_dir, settings.topic_prefix).to_pylist()
    assert [r["event_id"] for r in recommendations] == [served.event_id]
    assert recommendations[0]["items"][0] == {
        "item_id": "i3",
        "rank": 1,
        "score": 0.9,
        "reason": "popular",
        "variant": None,  # outside an experiment
        "propensity": None,
        "din_score": 1.25,  # DIN's logit, which the monitor compares
    }
    assert recommendations[0]["items"][1]["din_score"] is None  # not ranked by DIN
    assert recommendations[0]["experiment"] is None
    clicks = read_clicks(settings.data_dir, settings.topic_prefix).to_pylist()
    assert [(c["event_id"], c["item_id"], c["rank"]) for c in clicks] == [(click.event_id, "i3", 1)]

    # Offsets are committed to the end of what was written.
    committed = _committed(settings, topics.interactions)
    ranges = archived_ranges(topic_dir(settings.data_dir, topics.interactions))
    for partition, parts in ranges.items():
        assert committed[partition] == parts[-1][1] + 1

    # A second run finds nothing new and writes nothing.
    before = _files(settings, topics.interactions)
    second = Archiver(settings).run_once()
    assert second.files == [] and second.records == {}
    assert _files(settings, topics.interactions) == before


def test_rerun_after_a_crash_before_commit_adds_no_duplicates(live_settings: Settings) -> None:
    settings = live_settings
    topics = Topics(settings.topic_prefix)
    _produce(settings)
    Archiver(settings, flush_records=5).run_once()  # several parts per partition
    written = _files(settings, topics.interactions)
    folder = topic_dir(settings.data_dir, topics.interactions)
    rows = sum(pq.read_table(folder / name).num_rows for name in written)
    assert rows == 41
    assert max(len(parts) for parts in archived_ranges(folder).values()) > 1

    _reset_offsets(settings, topics.interactions)  # files on disk, offsets not committed
    rerun = Archiver(settings, flush_records=5).run_once()
    assert topics.interactions not in rerun.rows_written
    assert _files(settings, topics.interactions) == written  # same names, same bytes
    assert sum(pq.read_table(folder / name).num_rows for name in written) == rows
    assert read_interactions(settings.data_dir, settings.topic_prefix).num_rows == 40

    # Lose the files too (a fresh disk): the rerun rebuilds the same parts from Kafka.
    for path in topic_dir(settings.data_dir, topics.interactions).glob("*.parquet"):
        path.unlink()
    _reset_offsets(settings, topics.interactions)
    Archiver(settings, flush_records=5).run_once()
    assert set(_files(settings, topics.interactions)) == set(written)
    assert read_interactions(settings.data_dir, settings.topic_prefix).num_rows == 40
