"""Backfill: rebuild the online store from the log with the worker's own folding functions.

The event topics keep their full history, so every online feature is a function of the
log. ``backfill`` reads the interactions, recommendations and clicks topics from the
beginning up to their end offsets at the start (events after that are the running
worker's), folds them partition by partition in offset order exactly as the agents do
(``fold_interaction_at``, ``item_entries``, the impression-click join of
``streams.joins``, ``fold_item_entries``), and pushes one row per user and per item
through the same Feast push sources.

A record the worker cannot decode is skipped here too and sent to the dead-letter topic
with the reason (``consumer: backfill``); Kafka errors that go away (a broker that was just
started or is electing leaders) are retried with backoff (``streamrec.infra.kafka_retry``).

``since_ms`` keeps only events whose event time is at or after it: the features then
describe that slice of the log, as a worker started on it would.

``reset_worker`` also throws away the worker's Faust state (its consumer group, table
changelogs and item-activity topic), so that a worker started afterwards rebuilds its
tables by re-folding the whole log. Only with the worker stopped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import cast

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from streamrec.infra.kafka_retry import RETRIABLE_CODES, call_with_retry
from streamrec.infra.readiness import KeyValue, mark_pushed
from streamrec.infra.seen import SeenWriter
from streamrec.settings import Settings
from streams.dead_letters import DeadLetters
from streams.events import Click, EventRejected, Interaction, RecommendationServed, Topics, decode
from streams.folding import (
    CovisitEntry,
    Entry,
    Fold,
    ItemState,
    UserState,
    covisit_entries,
    covisit_pairs,
    fold_interaction_at,
    fold_item_entries,
    group_entries,
    item_entries,
    item_rows,
    source_key,
    stamp,
    user_rows,
)
from streams.joins import RequestJoin
from streams.sinks import ITEM_PUSH_SOURCE, USER_PUSH_SOURCE, ChangeNotifier, FeatureSink
from streams.topics import item_activity_topic

log = logging.getLogger(__name__)

# Rows per Feast push: large enough to amortise a push, small enough to stay in memory.
PUSH_ROWS = 5_000
# Records decoded and folded per consumer call.
READ_BATCH = 10_000


@dataclass
class BackfillReport:
    records: int = 0
    interactions: int = 0
    clicks: int = 0
    recommendations: int = 0
    attributed_clicks: int = 0  # joined to an impression of their request
    pending_clicks_given_up: int = 0  # their request never came within the bound
    rejected: int = 0  # undecodable records: dead-lettered and skipped, as the worker does
    duplicates: int = 0  # repeated event ids at new offsets
    before_since: int = 0  # skipped because their event time is before ``since_ms``
    users: int = 0
    items: int = 0
    seconds: float = 0.0
    pushes: int = 0
    end_offsets: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        rate = self.records / self.seconds if self.seconds else 0.0
        return (
            f"backfilled {self.users:,} users and {self.items:,} items from "
            f"{self.records:,} records ({self.interactions:,} interactions, {self.clicks:,} "
            f"clicks, {self.recommendations:,} recommendations, {self.attributed_clicks:,} "
            f"attributed clicks, {self.pending_clicks_given_up:,} pending clicks given up, "
            f"{self.rejected:,} rejected, {self.duplicates:,} duplicates, "
            f"{self.before_since:,} before --since) in {self.seconds:.1f}s "
            f"({rate:,.0f} records/s, {self.pushes} pushes)"
        )


def _end_offsets(consumer: Consumer, topics: list[str], timeout: float) -> list[TopicPartition]:
    """Every partition of ``topics`` with its current end offset (to read up to)."""
    metadata = call_with_retry(
        "backfill: listing topics", lambda: consumer.list_topics(timeout=timeout)
    )
    ends = []
    for topic in topics:
        if topic not in metadata.topics:
            raise KafkaException(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, f"no topic {topic}"))
        for partition in sorted(metadata.topics[topic].partitions):
            tp = TopicPartition(topic, partition)
            low, high = call_with_retry(
                f"backfill: end offsets of {topic}[{partition}]",
                partial(consumer.get_watermark_offsets, tp, timeout=timeout),
            )
            if high > low:
                ends.append(TopicPartition(topic, partition, high))
    return ends


# One record of the log: topic, partition, offset, key, value.
Record = tuple[str, int, int, bytes | None, bytes | None]


def read_log(
    bootstrap_servers: str,
    topics: list[str],
    timeout: float = 30.0,
    security: Mapping[str, str] | None = None,
) -> Iterator[list[Record]]:
    """Batches of records of ``topics`` from the beginning to the end offsets as of now;
    within a partition in offset order."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": f"streamrec-backfill-{time.time_ns()}",  # never commits
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "fetch.max.bytes": 64 * 1024 * 1024,
            "max.partition.fetch.bytes": 16 * 1024 * 1024,
            **(security or {}),
        }
    )
    try:
        ends = _end_offsets(consumer, topics, timeout)
        remaining = {(tp.topic, tp.partition): tp.offset for tp in ends}
        consumer.assign([TopicPartition(tp.topic, tp.partition, 0) for tp in ends])
        idle_since = time.monotonic()
        while remaining:
            messages = consumer.consume(READ_BATCH, timeout=1.0)
            if not messages:
                if time.monotonic() - idle_since > timeout:
                    raise TimeoutError(f"no records for {timeout:.0f}s; still to read: {remaining}")
                continue
            idle_since = time.monotonic()
            batch: list[Record] = []
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.retriable() or error.code() in RETRIABLE_CODES:
                        log.warning("backfill: transient Kafka error, retrying: %s", error)
                        continue
                    raise KafkaException(error)
                topic, partition = cast(str, message.topic()), cast(int, message.partition())
                offset = cast(int, message.offset())
                end = remaining.get((topic, partition))
                if end is None or offset >= end:
                    continue  # past the end offset as of the start: the worker's
                batch.append((topic, partition, offset, message.key(), message.value()))
                if offset >= end - 1:
                    del remaining[(topic, partition)]
            yield batch
    finally:
        consumer.close()


def fold_log(
    settings: Settings,
    since_ms: int | None = None,
    seen: dict[str, set[str]] | None = None,
    dead_letters: DeadLetters | None = None,
) -> tuple[dict[str, UserState], dict[str, ItemState], BackfillReport]:
    """Fold the interactions, recommendations and clicks topics into user and item states,
    as the worker does.

    ``seen``, when given, collects every item of every user's interactions
    (``streamrec.infra.seen``); ``dead_letters``, when given, receives every record that
    cannot be decoded.
    """
    topics = Topics(settings.topic_prefix)
    keep = settings.recent_items_max
    users: dict[str, UserState] = {}
    items: dict[str, ItemState] = {}
    report = BackfillReport()
    join = RequestJoin()
    kinds: dict[str, type[Interaction | RecommendationServed | Click]] = {
        topics.interactions: Interaction,
        topics.recommendations: RecommendationServed,
        topics.clicks: Click,
    }
    started = time.perf_counter()
    for batch in read_log(
        settings.bootstrap_servers, list(kinds), security=settings.kafka_security()
    ):
        for_items: list[tuple[str, int, Interaction | Click]] = []
        covisits: list[CovisitEntry] = []
        joined: list[Entry] = []
        for topic, partition, offset, key, value in batch:
            report.records += 1
            kind = kinds[topic]
            try:
                event = decode(kind, value)
            except EventRejected as rejected:
                report.rejected += 1
                if dead_letters is not None:
                    dead_letters.send(
                        topic=topic,
                        partition=partition,
                        offset=offset,
                        key=key,
                        value=value,
                        reason=rejected.reason,
                    )
                continue
            if since_ms is not None and event.event_time < since_ms:
                report.before_since += 1
                continue
            source = source_key(topic, partition)
            if isinstance(event, Interaction):
                if seen is not None:
                    seen.setdefault(event.user_id, set()).add(event.item_id)
                user = users.get(event.user_id)
                if user is None:
                    user = users[event.user_id] = UserState()
                fold = fold_interaction_at(user, event, keep, source, offset)
                if fold is Fold.DUPLICATE:
                    report.duplicates += 1
                    continue
                report.interactions += 1
                for_items.append((source, offset, event))
                pairs = covisit_pairs(user, event, position=offset)
                covisits += covisit_entries(source, offset, event, pairs)
            elif isinstance(event, Click):
                report.clicks += 1
                for_items.append((source, offset, event))
                joined.extend(join.fold(event, source, partition, offset))
            elif isinstance(event, RecommendationServed):
                report.recommendations += 1
                joined.extend(join.fold(event, source, partition, offset))
        join.expire()
        for entries in item_entries(for_items, covisits) + group_entries(joined):
            item = items.get(entries.item_id)
            if item is None:
                item = items[entries.item_id] = ItemState()
            fold_item_entries(item, entries)
    report.users, report.items = len(users), len(items)
    report.attributed_clicks = sum(item.attributed_click_count for item in items.values())
    report.pending_clicks_given_up = join.given_up.get("pending_click", 0)
    report.seconds = time.perf_counter() - started
    return users, items, report


def push_states(
    sink: FeatureSink,
    users: dict[str, UserState],
    items: dict[str, ItemState],
    notifier: ChangeNotifier | None = None,
) -> int:
    """Push one row per user and item, in chunks; returns the number of pushes. With a
    ``notifier``, each chunk of item rows goes into the ledger of changed items after it
    is written, as the worker's do (a running API then reads them at its next refresh)."""
    pushes = 0
    for user in users.values():
        stamp(user)
    for item in items.values():
        stamp(item)
    user_list, item_list = list(users.items()), list(items.items())
    for start in range(0, len(user_list), PUSH_ROWS):
        sink.push(USER_PUSH_SOURCE, user_rows(user_list[start : start + PUSH_ROWS]))
        pushes += 1
    for start in range(0, len(item_list), PUSH_ROWS):
        columns = item_rows(item_list[start : start + PUSH_ROWS])
        sink.push(ITEM_PUSH_SOURCE, columns)
        if notifier is not None:
            notifier.items_changed(columns["item_id"])
        pushes += 1
    return pushes


def reset_worker_state(settings: Settings, timeout: float = 30.0) -> list[str]:
    """Delete the worker's consumer group, table changelogs and item-activity topic.

    A worker started afterwards re-folds the whole log into fresh tables. Returns what
    was deleted. Refuses while the group has members (a worker is running).
    """
    group = f"{settings.topic_prefix}worker"
    admin = AdminClient(settings.kafka_client_config())
    description = admin.describe_consumer_groups([group], request_timeout=timeout)[group].result()
    if description.members:
        raise RuntimeError(f"consumer group {group} has running members: stop the worker first")
    deleted: list[str] = []
    try:
        admin.delete_consumer_groups([group], request_timeout=timeout)[group].result()
        deleted.append(f"group {group}")
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.GROUP_ID_NOT_FOUND:
            raise
    names = [
        name
        for name in admin.list_topics(timeout=timeout).topics
        if name.startswith(f"{group}-") or name == item_activity_topic(settings.topic_prefix)
    ]
    if names:
        for future in admin.delete_topics(names, operation_timeout=timeout).values():
            future.result()
        deleted.extend(f"topic {name}" for name in sorted(names))
    return deleted


def run_backfill(
    settings: Settings,
    sink: FeatureSink,
    *,
    since_ms: int | None = None,
    reset_worker: bool = False,
    seen_writer: SeenWriter | None = None,
    marker: KeyValue | None = None,
    notifier: ChangeNotifier | None = None,
) -> BackfillReport:
    started = time.perf_counter()
    seen: dict[str, set[str]] | None = {} if seen_writer is not None else None
    dead_letters = DeadLetters(
        settings.bootstrap_servers, Topics(settings.topic_prefix), "backfill"
    )
    try:
        users, items, report = fold_log(settings, since_ms, seen, dead_letters)
    finally:
        dead_letters.close()
    report.pushes = push_states(sink, users, items, notifier)
    if seen_writer is not None and seen:
        users_seen = list(seen.items())
        for start in range(0, len(users_seen), PUSH_ROWS):
            seen_writer.add(dict(users_seen[start : start + PUSH_ROWS]))
    if marker is not None:  # the online store holds features again: /readyz may say ready
        mark_pushed(marker, settings.topic_prefix, "backfill")
    if reset_worker:
        for what in reset_worker_state(settings):
            log.info("deleted %s", what)
    report.seconds = time.perf_counter() - started
    return report
