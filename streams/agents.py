"""The worker's agents: short ``async for`` loops over batches that call plain functions.

- ``fold_interactions``: interactions → per-user recent items (Faust table) → Feast push,
  a "user changed" notice, and per-item entries re-keyed by item_id.
- ``fold_clicks``: clicks on served recommendations → per-item entries, and the
  impression-click join (``streams.joins``).
- ``fold_items``: item entries → per-item running counts (Faust table) → Feast push.

Each loop decodes its batch (``streams.decoding``: bad records go to the dead-letter
topic), folds it with a pure function (``streams.batches``), then writes: the table and
its changelog (``streams.changelog``) before the Feast push, so a pushed row never
outlives a lost state. State is written once per user or item per batch, not once per
event: the table changelog and the activity topic then carry one record per key per batch.

Agents keep ``concurrency=1``: faust-streaming #606 commits offsets past in-flight
messages at higher concurrency, and a crash then loses them.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, cast

import faust

from streamrec.infra.lag import consumed_and_logged
from streamrec.infra.seen import SeenWriter
from streamrec.settings import Settings
from streams.batches import (
    Positioned,
    by_item_partition,
    fold_item_batch,
    fold_user_batch,
    once,
    split_clicks,
)
from streams.changelog import write_states
from streams.decoding import DeadLetters, RawSchema
from streams.events import Topics
from streams.experiments import ExperimentFold, ExperimentMetrics, fold_calls
from streams.folding import CovisitEntry, ItemEntries, group_entries, item_rows, user_rows
from streams.joins import FaustJoin, JoinMetrics
from streams.metrics import Laps, WorkerMetrics, add_metrics_page
from streams.sinks import ITEM_PUSH_SOURCE, USER_PUSH_SOURCE, ChangeNotifier, FeatureSink
from streams.topics import item_activity_topic
from streams.worker_metrics import WorkerFlowMetrics

log = logging.getLogger(__name__)

# How often the worker asks whether every click is folded (``FaustJoin.clicks_caught_up``).
CLICKS_CHECK_SECONDS = 10.0


@dataclass
class Worker:
    """Handles to what the agents write to; built by ``attach``."""

    app: faust.App
    metrics: WorkerMetrics


def attach(
    app: faust.App,
    settings: Settings,
    features: FeatureSink,
    notifier: ChangeNotifier,
    seen: SeenWriter | None = None,
    experiments: ExperimentFold | None = None,
) -> Worker:
    """Declare the worker's topics and tables on ``app`` and attach its three agents."""
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
    # A message of this topic holds a whole user batch's entries for one partition's
    # items: about 1 MiB decoded for 1,000 events. Faust decodes what it fetches ahead of
    # the agent up to the channel's buffer (``stream_buffer_maxsize``, thousands of
    # messages), so a backlog held gigabytes; ``worker_item_buffer`` bounds it. The
    # Topic is built directly: ``app.topic`` takes ``maxsize`` but does not pass it on.
    item_activity = faust.Topic(
        app,
        topics=[item_activity_topic(topics.prefix)],
        partitions=partitions,
        internal=True,
        key_serializer="raw",
        value_serializer="json",
        maxsize=settings.worker_item_buffer,
    )
    dead_letters = DeadLetters(
        app.topic(topics.dead_letters, partitions=partitions, schema=raw),
        topics,
        metrics.dead_letters,
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
    # The request table holds ``RequestState.to_json`` bytes the same way (records from
    # when it held decoded JSON are the same bytes).
    request_table = app.Table(
        "served_requests", default=None, partitions=partitions, key_type=str, value_type=bytes
    )
    join = FaustJoin(request_table, JoinMetrics.create(metrics.registry))

    def on_rebalance(sender: Any, /, *tps: Any, signal: Any, **kwargs: Any) -> None:
        join.rebalanced()

    app.on_partitions_revoked.connect(on_rebalance)
    app.on_partitions_assigned.connect(on_rebalance)

    @app.timer(CLICKS_CHECK_SECONDS)
    async def clicks_caught_up() -> None:
        """Let partitions nobody clicks in forget their requests (``streams.joins``)."""
        try:
            owned = sorted(
                tp.partition for tp in app.consumer.assignment() if tp.topic == topics.clicks
            )
            if not owned:
                return
            served = join.served_clocks()  # before the end offsets are asked for
            consumed, logged = await _in_thread(
                consumed_and_logged,
                settings.bootstrap_servers,
                topics.clicks,
                owned,
                app.conf.id,
                settings.kafka_security(),
            )
        except Exception as error:  # noqa: BLE001 (a later check will do; the clock stays)
            log.warning("join: could not read the clicks topic's offsets: %r", error)
            return
        join.clicks_caught_up(served, logged, consumed)

    activity_name = item_activity.get_topic_name()
    experiment_metrics = ExperimentMetrics.create(metrics.registry)

    async def fold_experiments(decoded: list[tuple[Any, Any]]) -> None:
        """The experiment counters (``streams.experiments``), one script call per event."""
        if experiments is not None and (calls := fold_calls(event for _, event in decoded)):
            experiment_metrics.moved(await _in_thread(experiments.fold, calls))

    async def batches(
        stream: faust.StreamT,
        within: float = settings.worker_batch_seconds,
        most: int = settings.worker_batch_size,
    ) -> AsyncIterator[list[faust.EventT]]:
        """Batches of whole events (with their messages), acknowledged after each batch;
        a record handed over twice in one batch is kept once (``streams.batches.once``).
        ``within``: the longest wait to fill one; ``most``: the records it holds at most."""
        typed = cast(faust.Stream, stream)
        async for events in typed.take_events(most, within=within):
            distinct, repeats = once(events)
            for topic, count in repeats.items():
                metrics.redelivered.labels(topic).inc(count)
            yield distinct

    async def push(source: str, columns: dict[str, list[Any]]) -> None:
        with metrics.push_seconds.labels(source).time():
            await _in_thread(features.push, source, columns)

    async def send_entries(
        positioned: list[Positioned],
        joined: list[ItemEntries],
        covisits: list[CovisitEntry] | None = None,
    ) -> None:
        grouped = by_item_partition(positioned, joined, partitions, covisits or [])
        for destination, items in grouped.items():
            await item_activity.send(value={"items": items}, partition=destination)

    @app.agent(interactions, concurrency=1)
    async def fold_interactions(stream: faust.StreamT) -> None:
        async for events in batches(stream):
            started, lap = time.perf_counter(), Laps(metrics, topics.interactions)
            decoded = await dead_letters.decode_batch(events)
            batch = fold_user_batch(decoded, user_table.get, settings.recent_items_max)
            folded = batch.folded
            metrics.duplicates.inc(batch.duplicates)
            metrics.redelivered.labels(topics.interactions).inc(folded.redelivered_count)
            lap("decode_fold")
            await write_states(app, user_table, folded.changed, folded.last_record)
            lap("table_write")
            # The seen sets and the features are independent writes: both in flight at once.
            writes = []
            if seen is not None and batch.seen:
                writes.append(_in_thread(seen.add, batch.seen))
            if rows := folded.to_push():
                writes.append(push(USER_PUSH_SOURCE, user_rows(rows)))
            await asyncio.gather(*writes)
            lap("feast_push_and_seen")
            flow.batch_folded(topics.interactions, events)
            if folded.changed:
                # After the push: a notice tells the API that fresh features are readable.
                await _in_thread(notifier.users_changed, list(folded.changed))
            lap("notify")
            await send_entries(batch.for_items, [], batch.covisits)
            lap("send_entries")
            await fold_experiments(decoded)
            metrics.events.labels(topics.interactions).inc(batch.new)
            metrics.batch_seconds.labels(topics.interactions).observe(time.perf_counter() - started)

    @app.agent(clicks_and_served, concurrency=1)
    async def fold_clicks(stream: faust.StreamT) -> None:
        async for events in batches(stream):
            decoded = await dead_letters.decode_batch(events)
            for_items, to_join = split_clicks(decoded)
            joined = join.fold_batch(stream, to_join)
            await fold_experiments(decoded)
            await send_entries(for_items, group_entries(joined))
            metrics.events.labels(topics.clicks).inc(len(for_items))
            metrics.events.labels(topics.recommendations).inc(len(to_join) - len(for_items))

    @app.agent(item_activity, concurrency=1)
    async def fold_items(stream: faust.StreamT) -> None:
        # A longer window than the user side's: each batch rewrites every touched item's
        # whole state and row, and no one's next list waits for an item row
        # (the API refreshes its item table in the background). On a backlog the window
        # fills with whole batches' entries (about 1 MiB each decoded): bounded in count.
        async for events in batches(
            stream, settings.worker_item_batch_seconds, settings.worker_item_batch_max
        ):
            started, lap = time.perf_counter(), Laps(metrics, activity_name)
            folded = fold_item_batch(events, item_table.get)
            metrics.redelivered.labels(activity_name).inc(folded.redelivered_count)
            lap("fold_entries")
            await write_states(app, item_table, folded.changed, folded.last_record)
            lap("table_write")
            if rows := folded.to_push():
                columns = item_rows(rows)
                await push(ITEM_PUSH_SOURCE, columns)
                # After the push: the API re-reads the rows the ledger names.
                await _in_thread(notifier.items_changed, columns["item_id"])
            lap("feast_push")
            flow.batch_folded(activity_name, events, written=False)
            metrics.batch_seconds.labels(activity_name).observe(time.perf_counter() - started)

    add_metrics_page(app, metrics)
    return Worker(app=app, metrics=metrics)


async def _in_thread(func: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, functools.partial(func, *args))
