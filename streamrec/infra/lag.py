"""Consumer-group lag: how far each group's committed offsets trail the log end."""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from streamrec.infra.kafka_retry import call_with_retry


@dataclass(frozen=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    committed: int  # -1 when the group has committed nothing on this partition yet
    end: int

    @property
    def lag(self) -> int:
        return self.end - max(self.committed, 0)


def consumer_lag(bootstrap_servers: str, timeout: float = 10.0) -> list[PartitionLag]:
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    listing = call_with_retry(
        "lag: listing consumer groups",
        lambda: admin.list_consumer_groups(request_timeout=timeout).result(),
    )
    groups = sorted(g.group_id for g in listing.valid)
    if not groups:
        return []
    metadata = call_with_retry("lag: listing topics", lambda: admin.list_topics(timeout=timeout))
    probe = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": "streamrec-lag-probe",
            "enable.auto.commit": False,
        }
    )
    rows: list[PartitionLag] = []
    try:
        for group in groups:
            try:
                offsets = call_with_retry(
                    f"lag: committed offsets of {group}", partial(_group_offsets, admin, group)
                )
            except KafkaException:
                continue
            committed = {
                (tp.topic, tp.partition): tp.offset for tp in offsets.topic_partitions or []
            }
            # A partition the group has not committed on yet is all lag: include every
            # partition of each topic the group has committed anything on.
            for topic in sorted({t for t, _ in committed}):
                if topic not in metadata.topics:
                    continue  # deleted since the group committed on it: nothing left to lag
                for partition in sorted(metadata.topics[topic].partitions):
                    tp = TopicPartition(topic, partition)
                    try:
                        _low, high = call_with_retry(
                            f"lag: end offset of {topic}[{partition}]",
                            partial(probe.get_watermark_offsets, tp, timeout=timeout),
                        )
                    except KafkaException as error:
                        if error.args[0].code() == KafkaError._UNKNOWN_PARTITION:
                            break  # the topic was deleted while we looked
                        raise
                    offset = committed.get((topic, partition), -1)
                    rows.append(PartitionLag(group, topic, partition, offset, high))
    finally:
        probe.close()
    return rows


def consumed_and_logged(
    bootstrap_servers: str,
    topic: str,
    partitions: list[int],
    group: str,
    security: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[dict[int, int], dict[int, int]]:
    """For ``partitions`` of ``topic``: an offset below which ``group`` has consumed every
    record (its committed offset, or the log's start), and the end offset, asked of the
    partition's leader now (not a cached one)."""
    probe = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": group,  # only to read its committed offsets: it never joins
            "enable.auto.commit": False,
            **(security or {}),
        }
    )
    consumed: dict[int, int] = {}
    logged: dict[int, int] = {}
    try:
        wanted = [TopicPartition(topic, partition) for partition in partitions]
        for tp in probe.committed(wanted, timeout=timeout):
            low, high = probe.get_watermark_offsets(tp, timeout=timeout, cached=False)
            consumed[tp.partition] = max(tp.offset, low)  # nothing committed: negative
            logged[tp.partition] = high
    finally:
        probe.close()
    return consumed, logged


def idle_groups(bootstrap_servers: str, timeout: float = 10.0) -> set[str]:
    """Groups with committed offsets but no member now: their lag grows because nothing
    runs them (e.g. an archiver run with ``--once``), not because a consumer falls behind."""
    from confluent_kafka import ConsumerGroupState

    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    listing = admin.list_consumer_groups(request_timeout=timeout).result()
    return {g.group_id for g in listing.valid if g.state == ConsumerGroupState.EMPTY}


def _group_offsets(admin: AdminClient, group: str) -> ConsumerGroupTopicPartitions:
    future = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])
    return future[group].result()


def partitions_behind(bootstrap_servers: str, group: str) -> list[PartitionLag] | None:
    """The partitions ``group`` has not committed to the end; None before its first commit."""
    rows = [r for r in consumer_lag(bootstrap_servers) if r.group == group]
    return [r for r in rows if r.lag] if rows else None


def describe_behind(behind: list[PartitionLag] | None) -> str:
    if behind is None:
        return "nothing committed yet"
    return ", ".join(f"{r.topic}[{r.partition}] lag {r.lag}" for r in behind) or "none"


def wait_until_caught_up(bootstrap_servers: str, group: str, timeout: float = 600.0) -> None:
    """Block until ``group`` has committed everything on every topic it consumes."""
    deadline = time.monotonic() + timeout
    behind = partitions_behind(bootstrap_servers, group)
    while behind != []:
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"consumer group {group} still lags after {timeout:.0f}s: {describe_behind(behind)}"
            )
        time.sleep(0.5)
        behind = partitions_behind(bootstrap_servers, group)
