"""`streamrec replay --speed max` writes the contract's bytes, on the partitions the
project's one producer chooses for the same keys."""

from __future__ import annotations

from collections import defaultdict

import pyarrow.parquet as pq

from streamrec.infra.processes import run_streamrec
from streamrec.settings import Settings
from streams.backfill import read_log
from streams.events import Interaction, Topics, encode
from streams.producer import EventProducer
from streams.topics import ensure_topics


def test_replayed_records_are_the_contract_bytes_on_the_producers_partitions(
    live_settings: Settings,
) -> None:
    settings = live_settings
    run_streamrec(settings, "data", "prepare", "synthetic:users=60,items=30,events=5000,seed=5")
    rows = pq.read_table(settings.data_dir / "datasets" / "synthetic" / "events.parquet")
    run_streamrec(settings, "replay", "synthetic", "--speed", "max")

    topic = Topics(settings.topic_prefix).interactions
    replayed = [r for batch in read_log(settings.bootstrap_servers, [topic]) for r in batch]
    expected = [
        encode(Interaction.model_validate({**row, "source": "replay"})) for row in rows.to_pylist()
    ]
    assert sorted((key, value) for *_, key, value in replayed) == sorted(expected)

    # One user's events stay in order on one partition, the one EventProducer (the API's
    # producer) picks for that user: live and replayed events of a user share a partition.
    partition_of: dict[bytes | None, set[int]] = defaultdict(set)
    by_partition: dict[int, list[bytes | None]] = defaultdict(list)
    for _, partition, _, key, value in replayed:
        partition_of[key].add(partition)
        by_partition[partition].append(value)
    assert all(len(p) == 1 for p in partition_of.values())
    for values in by_partition.values():  # the log is in event-time order, so each partition is
        times = [Interaction.model_validate_json(v or b"").event_time for v in values]
        assert times == sorted(times)

    reference = Topics(settings.topic_prefix + "ref.")
    ensure_topics(settings.bootstrap_servers, reference, settings.topic_partitions)
    users = sorted({key for key in partition_of if key is not None})[:20]
    with EventProducer(settings.bootstrap_servers, reference) as producer:
        for user in users:
            producer.send(Interaction(user_id=user.decode(), item_id="i", action="view"))
    live = [r for b in read_log(settings.bootstrap_servers, [reference.interactions]) for r in b]
    assert {key: {partition} for _, partition, _, key, _ in live} == {
        user: partition_of[user] for user in users
    }
