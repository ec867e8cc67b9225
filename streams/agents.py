"""The worker's agents: short ``async for`` loops over batches that call plain functions.

- ``fold_interactions``: interactions → per-user recent items (Faust table) → Feast push,
  a "user changed" notice, and per-item deltas re-keyed by item_id.
- ``fold_clicks``: clicks on served recommendations → per-item deltas.
- ``fold_items``: item deltas → per-item running counts (Faust table) → Feast push.

State is written once per user or item per batch, not once per event: the table
changelog and the activity topic then carry one record per key per batch.

Agents keep ``concurrency=1``: faust-streaming #606 commits offsets past in-flight
messages at higher concurrency, and a crash then loses them.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import faust
from prometheus_client import generate_latest

from streamrec.settings import Settings
from streams.app import WorkerMetrics
from streams.events import Click, Event, EventRejected, Interaction, Topics, dead_letter, decode
from streams.folding import (
    ItemDelta,
    ItemState,
    UserState,
    fold_interaction,
    fold_item,
    item_deltas,
    item_rows,
    stamp,
    user_rows,
)
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


def _make_current(stream: faust.StreamT, event: faust.EventT) -> None:
    """Make ``event`` the stream's current event.

    A table write goes to the changelog partition of the stream's current event; in a
    batch that is whichever came last, so before writing a key, make its own event current.
    """
    cast(faust.Stream, stream)._set_current_event(event)


async def _in_thread(func: Any, *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, functools.partial(func, *args))


def attach(
    app: faust.App, settings: Settings, features: FeatureSink, notifier: ChangeNotifier
) -> Worker:
    topics = Topics(settings.topic_prefix)
    metrics = WorkerMetrics.create()
    partitions = settings.topic_partitions
    raw: faust.Schema = faust.Schema(key_serializer="raw", value_serializer="raw")
    interactions = app.topic(topics.interactions, partitions=partitions, schema=raw)
    clicks = app.topic(topics.clicks, partitions=partitions, schema=raw)
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

    async def send_deltas(deltas: dict[str, ItemDelta]) -> None:
        for item_id, delta in deltas.items():
            await item_activity.send(key=item_id, value=delta.to_dict())

    @app.agent(interactions, concurrency=1)
    async def fold_interactions(stream: faust.StreamT) -> None:
        async for events in _batches(stream, batch, within):
            folded: list[Interaction] = []
            changed: dict[str, UserState] = {}
            last_event: dict[str, faust.EventT] = {}
            for event in events:
                interaction = await decode_or_dead_letter(event, Interaction)
                if not isinstance(interaction, Interaction):
                    continue
                user_id = interaction.user_id
                state = changed.get(user_id) or UserState.from_dict(user_table.get(user_id))
                if not fold_interaction(state, interaction, settings.recent_items_max):
                    metrics.duplicates.inc()
                    continue
                changed[user_id] = state
                last_event[user_id] = event
                folded.append(interaction)
            for user_id, state in changed.items():
                _make_current(stream, last_event[user_id])
                stamp(state)
                user_table[user_id] = state.to_dict()
            if changed:
                await push(USER_PUSH_SOURCE, user_rows(changed.items()))
                await _in_thread(notifier.users_changed, list(changed))
                await send_deltas(item_deltas(folded))
                metrics.events.labels(topics.interactions).inc(len(folded))

    @app.agent(clicks, concurrency=1)
    async def fold_clicks(stream: faust.StreamT) -> None:
        async for events in _batches(stream, batch, within):
            folded = [
                click
                for event in events
                if isinstance(click := await decode_or_dead_letter(event, Click), Click)
            ]
            await send_deltas(item_deltas(folded))
            metrics.events.labels(topics.clicks).inc(len(folded))

    @app.agent(item_activity, concurrency=1)
    async def fold_items(stream: faust.StreamT) -> None:
        async for events in _batches(stream, batch, within):
            changed: dict[str, ItemState] = {}
            last_event: dict[str, faust.EventT] = {}
            for event in events:
                delta = ItemDelta.from_dict(cast(dict[str, Any], event.value))
                item_id = delta.item_id
                state = changed.get(item_id) or ItemState.from_dict(item_table.get(item_id))
                fold_item(state, delta)
                changed[item_id] = state
                last_event[item_id] = event
            for item_id, state in changed.items():
                _make_current(stream, last_event[item_id])
                stamp(state)
                item_table[item_id] = state.to_dict()
            if changed:
                await push(ITEM_PUSH_SOURCE, item_rows(changed.items()))

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(metrics.registry), content_type="text/plain")

    return Worker(app=app, metrics=metrics)


def run_worker(settings: Settings, loglevel: str = "info") -> None:
    """Build the app with the real Feast and Redis adapters and run it until stopped."""
    from streamrec.feast_store import apply_definitions, open_store
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
    )
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
