"""The worker's agents: short ``async for`` loops over batches that call plain functions.

- ``fold_interactions``: interactions → per-user recent items (Faust table) → Feast push,
  a "user changed" notice, and per-item entries re-keyed by item_id.
- ``fold_clicks``: clicks on served recommendations → per-item entries.
- ``fold_items``: item entries → per-item running counts (Faust table) → Feast push.

State is written once per user or item per batch, not once per event: the table
changelog and the activity topic then carry one record per key per batch.

Every fold is idempotent by log position (see ``streams.folding``): the user table
remembers the offset it folded up to, and the item entries carry the offsets of the
events they add, so redelivery after a crash changes no feature.

Agents keep ``concurrency=1``: faust-streaming #606 commits offsets past in-flight
messages at higher concurrency, and a crash then loses them.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import faust
from aiokafka.partitioner import murmur2
from faust.exceptions import ConsumerNotStarted
from faust.types import TableT
from prometheus_client import generate_latest

from streamrec.settings import Settings
from streams.app import WorkerMetrics
from streams.events import (
    Click,
    Event,
    EventRejected,
    Interaction,
    RecommendationServed,
    Topics,
    dead_letter,
    decode,
)
from streams.folding import (
    Fold,
    ItemEntries,
    ItemState,
    UserState,
    entries_of,
    fold_interaction_at,
    fold_item_entries,
    group_entries,
    item_entries,
    item_rows,
    source_key,
    stamp,
    user_rows,
)
from streams.joins import FaustJoin, JoinMetrics
from streams.seen import SeenWriter
from streams.sinks import ITEM_PUSH_SOURCE, USER_PUSH_SOURCE, ChangeNotifier, FeatureSink

log = logging.getLogger(__name__)


@dataclass
class Worker:
    """Handles to what the agents write to; built by ``attach``."""

    app: faust.App
    metrics: WorkerMetrics


def _batches(
    stream: faust.StreamT, size: int, within: float
) -> AsyncIterator[Sequence[faust.EventT]]:
    """Batches of whole events (with their messages), acknowledged after each batch."""
    return cast(faust.Stream, stream).take_events(size, within=within)


def _write_states(
    table: TableT,
    states: dict[str, UserState] | dict[str, ItemState],
    last_event: dict[str, faust.EventT],
) -> list[asyncio.Future[Any]]:
    """Write each changed state to the table; returns its changelog records' deliveries.

    One record per key, in the changelog partition of the key's own last event: the
    partition a restarted worker reads the key's events from. The caller waits for the
    deliveries before pushing the states' rows: a row pushed before its state is saved
    would outlive a crash that loses the state, and the restarted worker, recovering an
    older state with older row times, could not replace that row (the store keeps the
    newer one), so the events it folds again would never show.
    """
    saved: list[asyncio.Future[Any]] = []
    for key, state in states.items():
        stamp(state)
        value = state.to_dict()
        partition = last_event[key].message.partition
        saved.append(cast(Any, table).send_changelog(partition, key, value))
        cast(Any, table).data[key] = value
    return saved


def _unpushed(redelivered: dict[str, Any], changed: dict[str, Any]) -> list[tuple[str, Any]]:
    """The states that met only redelivered records in a batch, to push again as they stand.

    A worker killed after its table write reached the changelog but before its Feast push
    leaves a state whose row never arrived; its restart meets those records as redelivered
    and changes nothing, so only pushing the state again brings the row. The state keeps
    its row time, and the store keeps a row only if it is newer: a row that did arrive is
    left as it is.
    """
    return [(key, state) for key, state in redelivered.items() if key not in changed]


class _Laps:
    """Observes the time since the previous lap as one stage of a batch."""

    def __init__(self, metrics: WorkerMetrics, topic: str) -> None:
        self._histogram = metrics.stage_seconds
        self._topic = topic
        self._last = time.perf_counter()

    def __call__(self, stage: str) -> None:
        now = time.perf_counter()
        self._histogram.labels(self._topic, stage).observe(now - self._last)
        self._last = now


def item_partition(item_id: str, partitions: int) -> int:
    """The item-activity partition of an item: Kafka's default partitioner on its id.

    The same partition the producer chose when the id was the message key, so item state
    already in the table changelogs stays with the partition that folds the item.
    """
    return (murmur2(item_id.encode()) & 0x7FFFFFFF) % partitions


async def _in_thread(func: Any, *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, functools.partial(func, *args))


def attach(
    app: faust.App,
    settings: Settings,
    features: FeatureSink,
    notifier: ChangeNotifier,
    seen: SeenWriter | None = None,
) -> Worker:
    topics = Topics(settings.topic_prefix)
    metrics = WorkerMetrics.create()
    partitions = settings.topic_partitions
    raw: faust.Schema = faust.Schema(key_serializer="raw", value_serializer="raw")
    interactions = app.topic(topics.interactions, partitions=partitions, schema=raw)
    # The impression-click join reads both: they are co-partitioned (streams.joins).
    clicks_and_served = app.topic(
        topics.clicks, topics.recommendations, partitions=partitions, schema=raw
    )
    dead_letters = app.topic(topics.dead_letters, partitions=partitions, schema=raw)
    item_activity = app.topic(
        f"{topics.prefix}worker-item-activity",
        partitions=partitions,
        internal=True,
        key_serializer="raw",
        value_serializer="json",
    )
    table_schema: faust.Schema = faust.Schema(
        key_type=str, key_serializer="raw", value_serializer="json"
    )
    user_table = app.Table("user_recent", default=None, partitions=partitions, schema=table_schema)
    item_table = app.Table("item_stats", default=None, partitions=partitions, schema=table_schema)
    request_table = app.Table(
        "served_requests", default=None, partitions=partitions, schema=table_schema
    )
    join = FaustJoin(request_table, JoinMetrics.create(metrics.registry))
    activity_name = item_activity.get_topic_name()
    batch, within = settings.worker_batch_size, settings.worker_batch_seconds

    async def decode_or_dead_letter(event: faust.EventT, kind: type[Event]) -> Event | None:
        message = event.message
        try:
            return decode(kind, message.value)
        except EventRejected as rejected:
            key, value = dead_letter(
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
                key=message.key,
                value=message.value,
                reason=rejected.reason,
            )
            await dead_letters.send(key=key, value=value)
            metrics.dead_letters.labels(message.topic).inc()
            log.warning(
                "dead-lettered %s[%s]@%s: %s",
                message.topic,
                message.partition,
                message.offset,
                rejected.reason,
            )
            return None

    async def push(source: str, columns: dict[str, list[Any]]) -> None:
        with metrics.push_seconds.labels(source).time():
            await _in_thread(features.push, source, columns)

    async def send_entries(messages: list[ItemEntries]) -> None:
        # One message per destination partition, not per item: a batch touches hundreds
        # of items, and each message costs the event loop a produce and a decode.
        by_partition: dict[int, list[dict[str, Any]]] = {}
        for message in messages:
            destination = item_partition(message.item_id, partitions)
            by_partition.setdefault(destination, []).append(message.to_dict())
        for destination, items in by_partition.items():
            await item_activity.send(value={"items": items}, partition=destination)

    @app.agent(interactions, concurrency=1)
    async def fold_interactions(stream: faust.StreamT) -> None:
        async for events in _batches(stream, batch, within):
            started = time.perf_counter()
            for_items: list[tuple[str, int, Interaction | Click]] = []
            changed: dict[str, UserState] = {}
            redelivered: dict[str, UserState] = {}
            last_event: dict[str, faust.EventT] = {}
            new = 0
            seen_now: dict[str, set[str]] = {}
            lap = _Laps(metrics, topics.interactions)
            for event in events:
                interaction = await decode_or_dead_letter(event, Interaction)
                if not isinstance(interaction, Interaction):
                    continue
                message = event.message
                source = source_key(message.topic, message.partition)
                user_id = interaction.user_id
                # Idempotent, so even a duplicate or redelivered event is (re)recorded.
                seen_now.setdefault(user_id, set()).add(interaction.item_id)
                state = changed.get(user_id) or UserState.from_dict(user_table.get(user_id))
                fold = fold_interaction_at(
                    state, interaction, settings.recent_items_max, source, message.offset
                )
                if fold is Fold.DUPLICATE:
                    # Saved like a change: the state now knows where the repeat was, which
                    # a redelivery of it has to find (and a later fetch of the user's state
                    # in this batch would otherwise not see).
                    metrics.duplicates.inc()
                    changed[user_id] = state
                    last_event[user_id] = event
                    continue
                if fold is Fold.REDELIVERED_DUPLICATE:
                    metrics.redelivered.labels(message.topic).inc()
                    redelivered[user_id] = state
                    continue
                # A redelivered event goes to the item side again: its entry may never
                # have arrived there, and the item side skips it if it did.
                for_items.append((source, message.offset, interaction))
                if fold is Fold.REDELIVERED:
                    metrics.redelivered.labels(message.topic).inc()
                    redelivered[user_id] = state
                    continue
                new += 1
                changed[user_id] = state
                last_event[user_id] = event
            lap("decode_fold")
            await asyncio.gather(*_write_states(user_table, changed, last_event))
            lap("table_write")
            # The seen sets and the features are independent writes: both in flight at once.
            writes = []
            if seen is not None and seen_now:
                writes.append(_in_thread(seen.add, seen_now))
            rows = [*changed.items(), *_unpushed(redelivered, changed)]
            if rows:
                writes.append(push(USER_PUSH_SOURCE, user_rows(rows)))
            await asyncio.gather(*writes)
            lap("feast_push_and_seen")
            if changed:
                # After the push: a notice tells the API that fresh features are readable.
                await _in_thread(notifier.users_changed, list(changed))
            lap("notify")
            await send_entries(item_entries(for_items))
            lap("send_entries")
            metrics.events.labels(topics.interactions).inc(new)
            metrics.batch_seconds.labels(topics.interactions).observe(time.perf_counter() - started)

    @app.agent(clicks_and_served, concurrency=1)
    async def fold_clicks(stream: faust.StreamT) -> None:
        """Clicks → REC_CLICK entries; clicks and served recommendations → the join's."""
        async for events in _batches(stream, batch, within):
            for_items: list[tuple[str, int, Interaction | Click]] = []
            to_join: list[tuple[faust.EventT, RecommendationServed | Click]] = []
            for event in events:
                message = event.message
                kind = Click if message.topic == topics.clicks else RecommendationServed
                decoded = await decode_or_dead_letter(event, kind)
                if isinstance(decoded, Click):
                    source = source_key(message.topic, message.partition)
                    for_items.append((source, message.offset, decoded))
                if isinstance(decoded, Click | RecommendationServed):
                    to_join.append((event, decoded))
            joined = join.fold_batch(stream, to_join)
            await send_entries(item_entries(for_items) + group_entries(joined))
            metrics.events.labels(topics.clicks).inc(len(for_items))
            metrics.events.labels(topics.recommendations).inc(len(to_join) - len(for_items))

    @app.agent(item_activity, concurrency=1)
    async def fold_items(stream: faust.StreamT) -> None:
        async for events in _batches(stream, batch, within):
            started = time.perf_counter()
            changed: dict[str, ItemState] = {}
            redelivered: dict[str, ItemState] = {}
            last_event: dict[str, faust.EventT] = {}
            lap = _Laps(metrics, activity_name)
            for event in events:
                for message in entries_of(cast(dict[str, Any], event.value)):
                    item_id = message.item_id
                    state = changed.get(item_id) or ItemState.from_dict(item_table.get(item_id))
                    total = len(message.entries)
                    applied = fold_item_entries(state, message)
                    if applied < total:
                        metrics.redelivered.labels(activity_name).inc(total - applied)
                        redelivered[item_id] = state
                    if applied:
                        changed[item_id] = state
                        last_event[item_id] = event
            lap("fold_entries")
            await asyncio.gather(*_write_states(item_table, changed, last_event))
            lap("table_write")
            rows = [*changed.items(), *_unpushed(redelivered, changed)]
            if rows:
                await push(ITEM_PUSH_SOURCE, item_rows(rows))
            lap("feast_push")
            metrics.batch_seconds.labels(item_activity.get_topic_name()).observe(
                time.perf_counter() - started
            )

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        _update_lag(app, metrics)
        return web.bytes(generate_latest(metrics.registry), content_type="text/plain")

    return Worker(app=app, metrics=metrics)


def _update_lag(app: faust.App, metrics: WorkerMetrics) -> None:
    """Set the lag gauge from the consumer's view: log end minus committed offset."""
    consumer = app.consumer
    committed = cast(Any, consumer)._committed_offset  # the offsets faust last committed
    try:
        assigned = consumer.assignment()
    except ConsumerNotStarted:  # /metrics answers before the consumer has started
        return
    for tp in assigned:
        end = consumer.highwater(tp)
        if end is None:
            continue
        done = committed.get(tp)
        metrics.lag.labels(tp.topic, str(tp.partition)).set(end - (done or 0))


def run_worker(settings: Settings, loglevel: str = "info") -> None:
    """Build the app with the real Feast and Redis adapters and run it until stopped."""
    from streamrec.feast_store import apply_definitions, open_store
    from streams.app import create_app
    from streams.seen import RedisSeenItems
    from streams.sinks import FeastFeatureSink, RedisChangeNotifier

    redis_url = settings.redis_connection_url
    if redis_url is None:
        raise SystemExit("the worker needs Redis for its change notices; set STREAMREC_REDIS_URL")
    store = open_store(settings)
    apply_definitions(store)
    app = create_app(settings)
    attach(
        app,
        settings,
        FeastFeatureSink(store),
        RedisChangeNotifier(redis_url, settings.topic_prefix),
        RedisSeenItems(redis_url, settings.topic_prefix),
    )
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)

    @app.task
    async def dump_tasks_on_signal() -> None:
        # `kill -USR1 <pid>` logs where every coroutine waits: a stalled worker is an idle
        # event loop, which a thread sampler such as py-spy cannot see into.
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, _log_tasks)

    worker.execute_from_commandline()


def _log_tasks() -> None:
    """Log each task's chain of awaits, innermost last: where it waits."""
    for task in asyncio.all_tasks():
        where = []
        awaited: Any = task.get_coro()
        while awaited is not None:
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "ag_frame", None)
            if frame is not None:
                where.append(
                    f"  {frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}"
                )
            else:
                where.append(f"  {awaited!r}")
            awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "ag_await", None)
        log.warning("task %s\n%s", task.get_name(), "\n".join(where))
