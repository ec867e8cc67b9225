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
import gc
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import faust
from aiokafka.partitioner import murmur2
from faust.exceptions import ConsumerNotStarted
from faust.serializers import codecs
from faust.types import TableT
from prometheus_client import Counter, generate_latest

from streamrec.infra.seen import SeenWriter
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
from streams.sinks import ITEM_PUSH_SOURCE, USER_PUSH_SOURCE, ChangeNotifier, FeatureSink
from streams.worker_metrics import WorkerFlowMetrics

log = logging.getLogger(__name__)


@dataclass
class Worker:
    """Handles to what the agents write to; built by ``attach``."""

    app: faust.App
    metrics: WorkerMetrics


async def _batches(
    stream: faust.StreamT, size: int, within: float, repeats: Counter
) -> AsyncIterator[list[faust.EventT]]:
    """Batches of whole events (with their messages), acknowledged after each batch.

    A record handed over twice in one batch is kept once (and counted in ``repeats``).
    At the end of recovery the stream partitions are sought back to their committed
    offsets (``streams.app._seek_with_flow_stopped``), and records read before the seek
    come again, possibly into the batch that already holds them. Every fold is idempotent
    across batches, but a record met twice in one batch would put its item entries twice
    into one message, and the item side keeps every entry of an offset it has not folded
    (``fold_item_entries``): it would count the event twice (the kill test saw it).
    """
    async for events in cast(faust.Stream, stream).take_events(size, within=within):
        yield _once(events, repeats)


def _once(events: Sequence[faust.EventT], repeats: Counter) -> list[faust.EventT]:
    """``events`` without a second delivery of the same record (topic, partition, offset)."""
    seen: set[tuple[str, int, int]] = set()
    distinct = []
    for event in events:
        message = event.message
        position = (message.topic, message.partition, message.offset)
        if position in seen:
            repeats.labels(message.topic).inc()
            continue
        seen.add(position)
        distinct.append(event)
    return distinct


async def _write_states(
    app: faust.App,
    table: TableT,
    states: dict[str, UserState] | dict[str, ItemState],
    last_event: dict[str, faust.EventT],
) -> None:
    """Write each changed state to the table and wait until its changelog record is stored.

    One record per key, in the changelog partition of the key's own last event: the
    partition a restarted worker reads the key's events from. The wait comes before the
    states' rows are pushed: a row pushed before its state is saved
    would outlive a crash that loses the state, and the restarted worker, recovering an
    older state with older row times, could not replace that row (the store keeps the
    newer one), so the events it folds again would never show.

    The records go to the Kafka client in whole batches, one per partition (more when a
    batch fills), in the table's own key and value formats, rather than through
    ``Table.send_changelog``: its buffered send costs more than the fold of an event, its
    completion hook keeps an offset only a RocksDB store uses, and even the client's own
    per-record ``send`` (a future, a metadata check and a partitioner call for each) was
    a tenth of the worker's time. The table holds the same bytes as the changelog record.
    """
    topic = table.changelog_topic.get_topic_name()
    records = _save(table, states, last_event)
    client = cast(Any, app.producer)._ensure_producer()  # the aiokafka producer
    saved = [
        delivery
        for partition, partition_records in records.items()
        for delivery in await _send_in_batches(client, topic, partition, partition_records)
    ]
    await _delivered(app, saved)


def _save(
    table: TableT,
    states: dict[str, UserState] | dict[str, ItemState],
    last_event: dict[str, faust.EventT],
) -> dict[int, list[tuple[bytes, bytes]]]:
    """Stamp the states, put them in the table, and return their changelog records
    (key and value bytes) by changelog partition: the partition of each key's last event.

    The table holds the value bytes themselves (its value type is bytes, see ``attach``),
    so a worker that recovers the table from its changelog holds the same.
    """
    collection = cast(Any, table)
    key_format, data = collection.key_serializer, collection.data
    if collection.value_serializer != "raw":
        raise ValueError(f"table {table.name!r} must hold bytes, not {collection.value_serializer}")
    records: dict[int, list[tuple[bytes, bytes]]] = {}
    for key, state in states.items():
        stamp(state)
        value = state.to_json()
        partition = last_event[key].message.partition
        records.setdefault(partition, []).append((codecs.dumps(key_format, key), value))
        data[key] = value
    return records


async def _send_in_batches(
    client: Any, topic: str, partition: int, records: list[tuple[bytes, bytes]]
) -> list[Awaitable[Any]]:
    """Send records to one partition in as few record batches as fit; their deliveries.

    A batch is closed before it is handed over, so it leaves without the producer's
    linger. The client sends one batch of a partition at a time, as it would the
    records one by one.
    """
    deliveries: list[Awaitable[Any]] = []
    batch = client.create_batch()
    for key, value in records:
        if batch.append(key=key, value=value, timestamp=None) is None:  # full
            batch.close()
            deliveries.append(await client.send_batch(batch, topic, partition=partition))
            batch = client.create_batch()
            # An empty batch takes any record; the broker judges one too large.
            batch.append(key=key, value=value, timestamp=None)
    if batch.record_count():
        batch.close()
        deliveries.append(await client.send_batch(batch, topic, partition=partition))
    return deliveries


# A delivery slower than this is logged with the producer's state, then waited for still.
DELIVERY_WARN_SECONDS = 30.0


async def _delivered(app: faust.App, deliveries: list[Awaitable[Any]]) -> None:
    """Wait for the changelog records' deliveries; log the producer's state while it lags.

    A worker once waited here 100 s with every agent idle and the Kafka client's sender
    asleep over undelivered batches (the kill test, rarely, right after a start). The log
    line says which partitions hold batches, how old, whether muted or in flight, and
    their leaders, so the next occurrence shows where the client stands.
    """
    waiting = asyncio.gather(*deliveries)
    while True:
        try:
            await asyncio.wait_for(asyncio.shield(waiting), DELIVERY_WARN_SECONDS)
            return
        except TimeoutError:
            log.warning(
                "changelog records undelivered after %.0f s: %s",
                DELIVERY_WARN_SECONDS,
                _producer_state(app),
            )


def _producer_state(app: faust.App) -> str:
    client: Any = getattr(app.producer, "_producer", None)  # the aiokafka producer
    if client is None:
        return "no producer"
    sender, accumulator = client._sender, client._message_accumulator
    now = time.monotonic()
    batches = {
        f"{tp.topic}[{tp.partition}]": (
            len(queue),
            round(now - queue[0]._ctime, 1) if queue else None,
            client.client.cluster.leader_for_partition(tp),
        )
        for tp, queue in accumulator._batches.items()
    }
    muted = sorted(map(str, sender._muted_partitions))
    return (
        f"batches (count, age s, leader) {batches}; pending {len(accumulator._pending_batches)}; "
        f"in flight {sorted(sender._in_flight)}; muted {muted}; "
        f"waiter done {accumulator._waiter_future.done()}; "
        f"wakeup {accumulator._wakeup_handle is not None}; sender task {sender.sender_task!r}"
    )


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


class RawSchema(faust.Schema):
    """Keys and values as the bytes received, as the "raw" codec gives them, but without
    Faust's codec lookups for every record (a twentieth of the worker's time, py-spy);
    ``streams.events.decode`` parses the value."""

    def __init__(self) -> None:
        super().__init__(key_serializer="raw", value_serializer="raw")

    def loads_key(self, app: Any, message: Any, **kwargs: Any) -> Any:
        return message.key

    def loads_value(self, app: Any, message: Any, **kwargs: Any) -> Any:
        return message.value


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
    flow = WorkerFlowMetrics.create(metrics.registry)
    partitions = settings.topic_partitions
    raw = RawSchema()
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
    # The user and item tables hold each state as the bytes of its changelog record
    # (``UserState.to_json``), read with ``from_json``. A bytes value type makes Faust
    # store and recover the values as bytes ("raw"); keys stay JSON strings. Records from
    # when the tables held decoded JSON are the same bytes.
    user_table = app.Table(
        "user_recent", default=None, partitions=partitions, key_type=str, value_type=bytes
    )
    item_table = app.Table(
        "item_stats", default=None, partitions=partitions, key_type=str, value_type=bytes
    )
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
        async for events in _batches(stream, batch, within, metrics.redelivered):
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
                state = changed.get(user_id) or UserState.from_json(user_table.get(user_id))
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
                if fold is not Fold.REDELIVERED_DUPLICATE:
                    # A redelivered event goes to the item side again: its entry may never
                    # have arrived there, and the item side skips it if it did. A repeat's
                    # never went: the item side would count it as new.
                    for_items.append((source, message.offset, interaction))
                if fold is Fold.NEW:
                    new += 1
                    changed[user_id] = state
                    last_event[user_id] = event
                else:
                    metrics.redelivered.labels(message.topic).inc()
                    redelivered[user_id] = state
            lap("decode_fold")
            await _write_states(app, user_table, changed, last_event)
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
            flow.batch_folded(topics.interactions, events)
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
        async for events in _batches(stream, batch, within, metrics.redelivered):
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
        async for events in _batches(stream, batch, within, metrics.redelivered):
            started = time.perf_counter()
            changed: dict[str, ItemState] = {}
            redelivered: dict[str, ItemState] = {}
            last_event: dict[str, faust.EventT] = {}
            lap = _Laps(metrics, activity_name)
            for event in events:
                for message in entries_of(cast(dict[str, Any], event.value)):
                    item_id = message.item_id
                    state = changed.get(item_id) or ItemState.from_json(item_table.get(item_id))
                    total = len(message.entries)
                    applied = fold_item_entries(state, message)
                    if applied < total:
                        metrics.redelivered.labels(activity_name).inc(total - applied)
                        redelivered[item_id] = state
                    if applied:
                        changed[item_id] = state
                        last_event[item_id] = event
            lap("fold_entries")
            await _write_states(app, item_table, changed, last_event)
            lap("table_write")
            rows = [*changed.items(), *_unpushed(redelivered, changed)]
            if rows:
                await push(ITEM_PUSH_SOURCE, item_rows(rows))
            lap("feast_push")
            flow.batch_folded(activity_name, events, written=False)
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
    from streamrec.infra.feast_store import apply_definitions, open_store
    from streamrec.infra.seen import RedisSeenItems
    from streams.app import create_app
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
    _tune_gc()
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)

    @app.task
    async def dump_tasks_on_signal() -> None:
        # `kill -USR1 <pid>` logs where every coroutine waits: a stalled worker is an idle
        # event loop, which a thread sampler such as py-spy cannot see into.
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, _log_tasks, app)

    worker.execute_from_commandline()


# Allocations between collections of the youngest generation (Python's default: 700).
GC_YOUNG_THRESHOLD = 50_000


def _tune_gc() -> None:
    """Make the cyclic garbage collector cheap for a worker that allocates per event.

    Every event allocates futures, tasks, messages and state copies, so with Python's
    default thresholds the collector ran every few events, and its older generations
    walked everything the imports (Feast, torch, pyarrow) left alive: about a third of the
    worker's time (`bench/worker_throughput.py` on 100k events: 3,760 events/s before,
    4,700-5,100 after). Freezing
    moves what exists at start out of every later collection, and a larger threshold
    collects young cycles less often; reference counting still frees everything else at
    once, so memory is not held longer.
    """
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, oldest)


def _log_tasks(app: faust.App) -> None:
    """Log the consumer's flow state and each task's chain of awaits, innermost last.

    The tasks of the consumer thread's own event loop (where the Kafka client fetches)
    are logged too, each marked so.
    """
    consumer: Any = app.consumer
    log.warning(
        "consumer: flow active %s, suspended %s, active %s, paused %s",
        getattr(consumer, "flow_active", None),
        consumer.suspend_flow.is_set() if hasattr(consumer, "suspend_flow") else None,
        sorted(map(str, getattr(consumer, "_active_partitions", None) or ())),
        sorted(map(str, getattr(consumer, "_paused_partitions", None) or ())),
    )
    # Per partition: committed and read offsets, the log end, the head of the acked
    # offsets waiting to be committed (a hole there holds every later commit back) and
    # the gaps Faust skips.
    for tp in sorted(getattr(consumer, "_acked", {}) or {}, key=str):
        acked = sorted(consumer._acked[tp])
        gaps = consumer._gap.get(tp)
        log.warning(
            "consumer %s[%s]: committed %s, read %s, end %s, %d acked from %s (%s), gaps %s",
            tp.topic,
            tp.partition,
            consumer._committed_offset.get(tp),
            consumer._read_offset.get(tp),
            consumer.highwater(tp),
            len(acked),
            acked[:5],
            "..." if len(acked) > 5 else "",
            sorted(gaps)[:5] if gaps else None,
        )
    unacked = sorted((m.topic, m.partition, m.offset) for m in list(consumer._unacked_messages))
    log.warning("consumer: %d unacked messages, first %s", len(unacked), unacked[:10])
    thread_loop = getattr(getattr(consumer, "_thread", None), "thread_loop", None)
    tasks = [(task, "") for task in asyncio.all_tasks()]
    if thread_loop is not None and thread_loop is not asyncio.get_running_loop():
        tasks += [(task, "consumer thread ") for task in asyncio.all_tasks(thread_loop)]
    for task, marker in tasks:
        where: list[str] = []
        awaited: Any = task.get_coro()
        while awaited is not None and len(where) < 50:
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "ag_frame", None)
            if frame is not None:
                where.append(
                    f"  {frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}"
                )
            else:
                where.append(f"  {awaited!r}")
            awaited = _awaited_by(awaited)
        log.warning("%stask %s\n%s", marker, task.get_name(), "\n".join(where))


def _awaited_by(awaiting: Any) -> Any:
    """What a coroutine, async generator or future-iterator waits on, if it can be told."""
    for name in ("cr_await", "ag_await"):
        if hasattr(awaiting, name):
            return getattr(awaiting, name)
    if isinstance(awaiting, asyncio.Future):
        return None  # its repr names it and the callbacks of whoever waits on it
    # An async generator's ``asend``, a coroutine's ``__await__`` wrapper and a future's
    # iterator expose what they wrap only to the collector.
    for referent in gc.get_referents(awaiting):
        if hasattr(referent, "cr_frame") or hasattr(referent, "ag_frame"):
            return referent
        if isinstance(referent, asyncio.Future):
            return referent
    return None
