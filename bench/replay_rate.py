"""Replay rate into a real broker: prepared MovieLens-100K at max speed, several repeats.

    .venv/bin/python bench/replay_rate.py [--events N] [--repeats R]

Uses the broker of the settings (STREAMREC_KAFKA_PORT / STREAMREC_KAFKA_BOOTSTRAP), under
a fresh topic prefix that is deleted afterwards, so it never mixes with real topics. Each
repeat counts from the first event to the last delivery acknowledgement (acks=all), and
the topics' end offsets are checked against what was sent.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid

import pyarrow.parquet as pq
from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from bench.stats import summary
from replay.kafka_sink import KafkaSink
from replay.loading import SourceError
from replay.movielens import NAME
from replay.prepare import prepare
from replay.replayer import Replayer, ReplayError
from streamrec.paths import dataset_events
from streamrec.settings import Settings, load_settings
from streams.events import Topics
from streams.producer import EventProducer
from streams.topics import delete_topics, ensure_topics


def until_for(path: str, events: int | None) -> int | None:
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


def run(settings: Settings, events: int | None, repeats: int) -> int:
    path = dataset_events(settings.data_dir, NAME)
    if not path.is_file():
        print(f"preparing {NAME} in {settings.data_dir} ...", file=sys.stderr)
        prepare(settings, NAME)
    until = until_for(str(path), events)
    topics = Topics(f"bench{uuid.uuid4().hex[:8]}.")
    bootstrap = settings.bootstrap_servers
    ensure_topics(bootstrap, topics, settings.topic_partitions, timeout=10)
    rates: list[float] = []
    sent_total = 0
    try:
        for repeat in range(1, repeats + 1):
            producer = EventProducer(bootstrap, topics)
            replayer = Replayer(path, KafkaSink(producer), speed=None, until_ms=until)
            started = time.perf_counter()
            status = replayer.run()  # ends with a flush: every event acknowledged
            elapsed = time.perf_counter() - started
            producer.close()
            sent_total += status.events_sent
            rates.append(status.events_sent / elapsed)
            print(
                f"run {repeat}: {status.events_sent:,} events in {elapsed:.2f} s "
                f"= {rates[-1]:,.0f} events/s"
            )
        in_topic = delivered(bootstrap, topics.interactions)
    finally:
        delete_topics(bootstrap, topics.all())
    print(summary(f"replay rate, max speed, {repeats} runs", rates, "events/s"))
    print(f"broker has {in_topic:,} of the {sent_total:,} events sent")
    return 0 if in_topic == sent_total else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=None, help="replay only the first N")
    parser.add_argument("--repeats", type=int, default=5, help="runs to measure (>= 5)")
    args = parser.parse_args()
    try:
        return run(load_settings(), args.events, max(args.repeats, 5))
    except (KafkaException, ReplayError, SourceError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
