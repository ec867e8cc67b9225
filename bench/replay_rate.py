"""Replay rate into a real broker: a prepared log at max speed, the replayer against the
per-event path it replaced, interleaved in one run.

    .venv/bin/python bench/replay_rate.py [--source movielens-100k] [--events N] [--repeats R]

Uses the broker of the settings (STREAMREC_KAFKA_PORT / STREAMREC_KAFKA_BOOTSTRAP), under
a fresh topic prefix that is deleted afterwards, so it never mixes with real topics. Each
repeat counts from the first event to the last delivery acknowledgement (acks=all), and
the topics' end offsets are checked against what was sent. Besides events per second of
wall time, it reports events per CPU-second of this process (the machine is shared, so
the wall-clock rate moves with the load; CPU time moves less), and the ratio of the two
paths measured in the same run.

The per-event path is what ``streamrec replay`` did before batch encoding: one pydantic
``Interaction`` validated and encoded per event, sent by ``EventProducer`` with a future
and a delivery callback each.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from bench.stats import summary
from replay.kafka_sink import KafkaSink
from replay.loading import SourceError
from replay.prepare import prepare
from replay.replayer import Replayer, ReplayError
from streamrec.paths import dataset_events
from streamrec.settings import Settings, load_settings
from streams.events import Interaction, Topics
from streams.producer import EventProducer
from streams.topics import delete_topics, ensure_topics


def until_for(path: Path, events: int | None) -> int | None:
    """An exclusive end time that keeps about the first ``events`` events."""
    times = pq.read_table(path, columns=["event_time"]).column("event_time")
    if events is None or events >= len(times):
        return None
    return int(times[events].as_py())


def delivered(bootstrap: str, topic: str) -> int:
    """Records in ``topic``: the sum of its partitions' end offsets."""
    from confluent_kafka import Consumer

    admin = AdminClient({"bootstrap.servers": bootstrap})
    partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4()}"})
    try:
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        )
    finally:
        consumer.close()


def batch_replay(path: Path, bootstrap: str, topics: Topics, until: int | None) -> int:
    """``streamrec replay --speed max``: the Replayer and its Kafka sink."""
    sink = KafkaSink(bootstrap, topics.interactions)
    status = Replayer(path, sink, speed=None, until_ms=until).run()  # ends with a flush
    sink.close()
    return status.events_sent


def failed_into(failed: list[BaseException]) -> Callable[[Future[Any]], None]:
    def on_done(future: Future[Any]) -> None:
        error = future.exception()
        if error is not None:
            failed.append(error)

    return on_done


def per_event_replay(path: Path, bootstrap: str, topics: Topics, until: int | None) -> int:
    """The path before: a validated Interaction and a delivery future per event."""
    table = pq.read_table(path)
    if until is not None:
        table = table.filter(
            pq.read_table(path, columns=["event_time"])["event_time"].to_numpy() < until
        )
    producer = EventProducer(bootstrap, topics)
    failed: list[BaseException] = []
    sent = 0
    for batch in table.to_batches(65_536):
        columns = [
            batch.column(name).to_pylist()
            for name in ("event_id", "event_time", "user_id", "item_id", "action", "rating")
        ]
        for event_id, event_time, user, item, action, rating in zip(*columns, strict=True):
            event = Interaction.model_validate(
                {
                    "event_id": event_id,
                    "event_time": event_time,
                    "user_id": user,
                    "item_id": item,
                    "action": action,
                    "rating": rating,
                    "source": "replay",
                }
            )
            producer.send(event).add_done_callback(failed_into(failed))
            sent += 1
    producer.close()
    if failed:
        raise ReplayError(f"{len(failed)} events not delivered: {failed[0]}")
    return sent


def measure(
    name: str, run: Callable[[], int], wall: dict[str, list[float]], cpu: dict[str, list[float]]
) -> int:
    started, cpu_started = time.perf_counter(), time.process_time()
    sent = run()
    elapsed, cpu_used = time.perf_counter() - started, time.process_time() - cpu_started
    wall.setdefault(name, []).append(sent / elapsed)
    cpu.setdefault(name, []).append(sent / cpu_used)
    print(
        f"  {name:>9}: {sent:,} events in {elapsed:.2f} s = {sent / elapsed:,.0f} events/s "
        f"({cpu_used:.2f} CPU-s, {sent / cpu_used:,.0f} events per CPU-s)",
        flush=True,
    )
    return sent


def run(settings: Settings, source: str, events: int | None, repeats: int, baseline: bool) -> int:
    name = source.partition(":")[0]
    path = dataset_events(settings.data_dir, name)
    if not path.is_file():
        print(f"preparing {source} in {settings.data_dir} ...", file=sys.stderr)
        prepare(settings, source)
    until = until_for(path, events)
    topics = Topics(f"bench{uuid.uuid4().hex[:8]}.")
    bootstrap = settings.bootstrap_servers
    ensure_topics(bootstrap, topics, settings.topic_partitions, timeout=10)
    wall: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    sent_total = 0
    paths: dict[str, Callable[[], int]] = {
        "batch": lambda: batch_replay(path, bootstrap, topics, until)
    }
    if baseline:
        paths["per-event"] = lambda: per_event_replay(path, bootstrap, topics, until)
    try:
        # Warm-up: producer ids, metadata, the page cache.
        sent_total += batch_replay(path, bootstrap, topics, until_for(path, 1000))
        for repeat in range(1, repeats + 1):
            print(f"run {repeat}:")
            for label, replay in paths.items():  # interleaved: both see the same load
                sent_total += measure(label, replay, wall, cpu)
        in_topic = delivered(bootstrap, topics.interactions)
    finally:
        delete_topics(bootstrap, topics.all())
    for label in paths:
        print(summary(f"{label}: replay rate, max speed, {repeats} runs", wall[label], "events/s"))
        print(summary(f"{label}: events per CPU-second", cpu[label], "events/CPU-s"))
    if baseline:
        ratios = [
            statistics.median(m["batch"]) / statistics.median(m["per-event"]) for m in (wall, cpu)
        ]
        print(
            f"batch / per-event, medians of the same run: {ratios[0]:.1f}x events/s, "
            f"{ratios[1]:.1f}x events per CPU-s"
        )
    print(f"broker has {in_topic:,} of the {sent_total:,} events sent")
    return 0 if in_topic == sent_total else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--source", default="movielens-100k", help="a prepared (or preparable) source"
    )
    parser.add_argument("--events", type=int, default=None, help="replay only the first N")
    parser.add_argument("--repeats", type=int, default=5, help="runs to measure (>= 3)")
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip the per-event path (it is slow)"
    )
    args = parser.parse_args()
    try:
        return run(
            load_settings(), args.source, args.events, max(args.repeats, 3), not args.no_baseline
        )
    except (KafkaException, ReplayError, SourceError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
