"""The worker's agents: short ``async for`` loops over batches that call plain functions.

- ``fold_interactions``: interactions → per-user recent items (Faust table) → Feast push,
  a "user changed" notice, and item activity re-keyed by item_id.
- ``fold_clicks``: clicks on served recommendations → item activity.
- ``fold_items``: item activity → per-item running counts (Faust table) → Feast push.

Agents keep ``concurrency=1``: faust-streaming #606 commits offsets past in-flight
messages at higher concurrency, and a crash then loses them.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import faust
from prometheus_client import generate_latest

from streamrec.settings import Settings
from streams.app import WorkerMetrics
from streams.events import Click, Event, EventRejected, Interaction, Topics, dead_letter, decode
from streams.folding import (
    ItemActivity,
    ItemState,
    UserState,
    fold_interaction,
    fold_item,
    item_rows,
    user_rows,
)
from streams.sinks import ITEM_PUSH_SOURCE, USER_PUSH_SOURCE, ChangeNotifier, FeatureSink

log = logging.getLogger(__name__)


@dataclass
class Worker:
    """Handles to what the agents write to; built by ``attach``."""

    app: faust.App
    metrics: WorkerMetrics


async def _in_thread(func: Any, *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, functools.partial(func, *args))


def attach(
    app: faust.App, settings: Settings, features: FeatureSink, notifier: ChangeNotifier
) -> Worker:
    topics = Topics(settings.topic_prefix)
    metrics = WorkerMetrics.create()
    partitions = settings.topic_partitions
    raw = {"key_serializer": "raw", "value_serializer": "raw"}
    interactions = app.topic(topics.interactions, partitions=partitions, **raw)
    clicks = app.topic(topics.clicks, partitions=partitions, **raw)
    dead_letters = app.topic(topics.dead_letters, partitions=partitions, **raw)
    item_activity = app.topic(
        f"{topics.prefix}worker-item-activity", partitions=partitions, internal=True,
        key_serializer="raw", value_serializer="json",
    )
    table_schema = faust.Schema(key_type=str, key_serializer="raw", value_serializer="json")
    user_table = app.Table("user_recent", default=None, partitions=partitions,
                           schema=table_schema)
    item_table = app.Table("item_stats", default=None, partitions=partitions,
                           schema=table_schema)
    batch, within = settings.worker_batch_size, settings.worker_batch_seconds

    async def decode_or_dead_letter(
        stream: faust.StreamT, event: faust.EventT, kind: type[Event]
    ) -> Event | None:
        message = event.message
        try:
            return decode(kind, message.value)
        except EventRejected as rejected:
            key, value = dead_letter(
                topic=message.topic, partition=message.partition, offset=message.offset,
                key=message.key, value=message.value, reason=rejected.reason,
            )
            await dead_letters.send(key=key, value=value)
            metrics.dead_letters.labels(message.topic).inc()
            log.warning("dead-lettered %s[%s]@%s: %s", message.topic, message.partition,
                        message.offset, rejected.reason)
            return None

    async def push(source: str, columns: dict[str, list[Any]]) -> None:
        with metrics.push_seconds.labels(source).time():
            await _in_thread(features.push, source, columns)

    @app.agent(interactions, concurrency=1)
    async def fold_interactions(stream: faust.StreamT) -> None:
        async for events in stream.take_events(batch, within=within):
            changed = await _fold_interaction_batch(stream, events)
            if changed:
                await push(USER_PUSH_SOURCE, user_rows(changed.items()))
                await _in_thread(notifier.users_changed, list(changed))

    async def _fold_interaction_batch(
        stream: faust.StreamT, events: Sequence[faust.EventT]
    ) -> dict[str, UserState]:
        changed: dict[str, UserState] = {}
        for event in events:
            interaction = await decode_or_dead_letter(stream, event, Interaction)
            if not isinstance(interaction, Interaction):
                continue
            user_id = interaction.user_id
            state = changed.get(user_id) or UserState.from_dict(user_table.get(user_id))
            if not fold_interaction(state, interaction, settings.recent_items_max):
                metrics.duplicates.inc()
                continue
            # Table writes go to the changelog partition of the event being folded; in a
            # batch that is not the stream's current event, so make it current.
            stream._set_current_event(event)
            user_table[user_id] = state.to_dict()
            changed[user_id] = state
            activity = ItemActivity.of(interaction)
            await item_activity.send(key=activity.item_id.encode(), value=activity.to_dict())
            metrics.events.labels(topics.interactions).inc()
        return changed

    @app.agent(clicks, concurrency=1)
    async def fold_clicks(stream: faust.StreamT) -> None:
        async for events in stream.take_events(batch, within=within):
            for event in events:
                click = await decode_or_dead_letter(stream, event, Click)
                if isinstance(click, Click):
                    activity = ItemActivity.of(click)
                    await item_activity.send(key=activity.item_id.encode(),
                                             value=activity.to_dict())
                    metrics.events.labels(topics.clicks).inc()

    @app.agent(item_activity, concurrency=1)
    async def fold_items(stream: faust.StreamT) -> None:
        async for events in stream.take_events(batch, within=within):
            changed: dict[str, ItemState] = {}
            for event in events:
                activity = ItemActivity.from_dict(event.value)
                key = activity.item_id
                state = changed.get(activity.item_id) or ItemState.from_dict(item_table.get(key))
                fold_item(state, activity)
                stream._set_current_event(event)
                item_table[key] = state.to_dict()
                changed[activity.item_id] = state
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
    attach(app, settings, FeastFeatureSink(store), RedisChangeNotifier(redis_url,
                                                                        settings.topic_prefix))
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
