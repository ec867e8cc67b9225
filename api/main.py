"""The FastAPI app: ``create_app`` wires adapters, routes and background tasks; ``run``
serves it with uvicorn.

Adapters come from the settings unless passed in (tests pass in-memory ones):

* features — Feast online store (``open_store(settings)``: Redis, or SQLite when
  ``STREAMREC_REDIS_URL=none``);
* sink — Kafka at ``settings.bootstrap_servers`` under ``settings.topic_prefix``;
* changes — Redis pub/sub on ``user_changed_channel(prefix)``; with no Redis, an in-memory
  feed nobody notifies (streams then send their first list and pings only);
* replay sink — a producer to Kafka per replay started through ``/admin/replay``;
* models — the ``champion`` set of the MLflow registry at ``settings.mlflow_uri``, looked
  for every ``model_poll_seconds`` (``api/serving/champion.py``); the baseline item-kNN
  serves until one is loaded.

The lifespan closes only what it opened itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response

from api.adapters.features_marker import FeaturesMarker
from api.adapters.memory_changes import InMemoryChangeFeed
from api.body_limit import BodySizeLimit
from api.deps import Services
from api.errors import validation_error_response
from api.experiments.book import ExperimentBook
from api.ingest import CountStorage, IngestGuard, memory_counts, redis_counts
from api.metrics import ApiMetrics, RequestMetricsMiddleware
from api.ports import ChangeFeed, EventSink, FeatureReader
from api.replay_control import OneProcessReplay, ReplayControl, ReplayControls, SinkFactory
from api.routes import admin, cockpit, events, experiments, health, recommend, replay, stream
from api.routes.ui import install_ui
from api.serving.champion import ChampionWatcher
from api.serving.service import RecommendationService, ServedLog
from api.state import RecommenderState
from api.stream_hub import StreamHub
from api.workers import SHARED_METRICS_ENV, serve_processes, server_options
from replay.replayer import Sink
from streamrec.infra.experiments import (
    EXPERIMENT_POLL_SECONDS,
    ExperimentStore,
    MemoryExperimentStore,
    RedisExperimentStore,
)
from streamrec.infra.gc_tuning import freeze_startup_heap
from streamrec.infra.model_store import CHALLENGER
from streamrec.infra.notify import user_changed_channel
from streamrec.infra.readiness import redis_store
from streamrec.paths import archive_topic_dir
from streamrec.settings import Settings
from streams.events import Topics

logger = logging.getLogger(__name__)

# The event log changes when `data prepare` or the archiver writes; a minute is fresh
# enough for co-occurrence, and an unchanged log costs only a directory listing.
LOG_REFRESH_SECONDS = 60.0
# Served events still in flight at shutdown get this long to reach the broker.
DRAIN_SECONDS = 5.0
# Intra-op threads per inference. On a 2-core machine shared with the worker and the
# event loop, a second thread made the cascade slower, not faster (bench/cascade_request.py).
TORCH_THREADS = 1


def create_app(
    settings: Settings,
    *,
    features: FeatureReader | None = None,
    sink: EventSink | None = None,
    changes: ChangeFeed | None = None,
    metrics: ApiMetrics | None = None,
    log_refresh_seconds: float = LOG_REFRESH_SECONDS,
    features_marker: FeaturesMarker | None = None,
    replay_sink: SinkFactory | None = None,
    experiment_store: ExperimentStore | None = None,
    ingest_counts: CountStorage | None = None,
    shared_replay: bool = False,
    freeze_heap: bool = False,
) -> FastAPI:
    """``shared_replay``: this is one of several API processes, which share one replay
    through Redis (``api.replay_shared``). ``freeze_heap``: this process is a server of
    its own (``streamrec serve``), whose start-up heap is left out of the garbage
    collector's later passes once started (``streamrec.infra.gc_tuning``); never in a
    test process, whose objects come and go."""
    api_metrics = metrics if metrics is not None else ApiMetrics()
    replay_control = ReplayControl(
        settings.data_dir,
        replay_sink if replay_sink is not None else _kafka_replay_sink(settings),
    )
    replay_controls = (
        _shared_replay(replay_control, settings)
        if shared_replay
        else OneProcessReplay(replay_control)
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            reader: FeatureReader = (
                features
                if features is not None
                else await stack.enter_async_context(_open_feast_reader(settings))
            )
            event_sink: EventSink = (
                sink
                if sink is not None
                else await stack.enter_async_context(_open_kafka_sink(settings))
            )
            change_feed: ChangeFeed = (
                changes
                if changes is not None
                else await stack.enter_async_context(_open_change_feed(settings))
            )
            torch.set_num_threads(TORCH_THREADS)
            champion = ChampionWatcher(settings, api_metrics)
            challenger = ChampionWatcher(settings, api_metrics, alias=CHALLENGER)
            state = RecommenderState(
                settings.datasets_dir,
                reader,
                api_metrics,
                champion,
                archive_dir=archive_topic_dir(
                    settings.data_dir, Topics(settings.topic_prefix).interactions
                ),
            )
            served_log = ServedLog(event_sink, api_metrics)
            book = ExperimentBook(
                experiment_store if experiment_store is not None else _experiment_store(settings)
            )
            app.state.services = Services(
                settings=settings,
                metrics=api_metrics,
                features=reader,
                sink=event_sink,
                changes=change_feed,
                state=state,
                served_log=served_log,
                champion=champion,
                recommendations=RecommendationService(
                    reader,
                    state,
                    served_log,
                    api_metrics,
                    champion,
                    book,
                    challenger,
                    max_in_progress=settings.api_max_in_progress,
                    answer_memo_size=settings.api_answer_memo_size,
                    answer_max_item_age=settings.api_answer_max_item_age_seconds,
                ),
                experiments=book,
                features_marker=(
                    features_marker
                    if features_marker is not None or features is not None
                    else _default_features_marker(settings)
                ),
            )
            tasks = [
                asyncio.create_task(state.run_log_refresh(log_refresh_seconds), name="log-refresh"),
                asyncio.create_task(
                    state.run_item_refresh(settings.item_cache_seconds), name="item-refresh"
                ),
                asyncio.create_task(
                    champion.run(settings.model_poll_seconds, lambda: state.online_stats),
                    name="model-poll",
                ),
                asyncio.create_task(
                    challenger.run(settings.model_poll_seconds, lambda: state.online_stats),
                    name="challenger-poll",
                ),
                asyncio.create_task(book.run(EXPERIMENT_POLL_SECONDS), name="experiments-poll"),
            ]
            for task in tasks:
                task.add_done_callback(_report_task_end)
            if freeze_heap:
                # Without this, a collection of the oldest generation walked everything the
                # imports left alive: a pause of the event loop of about half a second.
                freeze_startup_heap()
            try:
                yield
            finally:
                # First: a running replay flushes its producer before the broker goes away.
                await replay_controls.close()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await served_log.drain(timeout=DRAIN_SECONDS)
                api_metrics.close()

    app = FastAPI(
        title="streamrec",
        summary="Real-time recommendations from an event-sourced log",
        lifespan=lifespan,
        docs_url=None,  # served by install_ui from local assets, not a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.replay = replay_control
    app.state.replay_controls = replay_controls
    app.state.metrics = api_metrics
    app.state.ingest_guard = IngestGuard(
        settings,
        ingest_counts if ingest_counts is not None else _default_ingest_counts(settings, features),
    )
    app.state.stream_hub = StreamHub(settings.sse_max_streams_per_user, settings.sse_max_streams)
    app.add_middleware(RequestMetricsMiddleware, metrics=api_metrics)
    # Added last, so it runs first: an oversized body is refused before anything reads it.
    app.add_middleware(BodySizeLimit, max_bytes=settings.api_max_body_bytes)

    async def count_rejected_events(request: Request, exc: Exception) -> Response:
        if request.url.path == "/events":
            api_metrics.events_rejected.labels("invalid").inc()
        return await validation_error_response(request, exc)

    app.add_exception_handler(RequestValidationError, count_rejected_events)
    for module in (recommend, stream, events, health, admin, experiments, replay, cockpit):
        app.include_router(module.router)
    install_ui(app)
    return app


def _shared_replay(control: ReplayControl, settings: Settings) -> ReplayControls:
    from api.replay_shared import SharedReplayControl

    redis_url = settings.redis_connection_url
    if redis_url is None:
        raise ValueError("a replay shared by several API processes needs Redis")
    return SharedReplayControl(control, redis_url, settings.topic_prefix)


def _experiment_store(settings: Settings) -> ExperimentStore:
    """The experiments in Redis, shared by every API process; in memory without Redis."""
    redis_url = settings.redis_connection_url
    if redis_url is None:
        return MemoryExperimentStore()
    return RedisExperimentStore(redis_url, settings.topic_prefix)


def run(settings: Settings, workers: int = 1) -> None:
    """Serve the API on ``settings.api_host:api_port`` until interrupted; with ``workers``
    above 1, from that many processes (``api.workers``)."""
    if workers != 1:
        serve_processes(settings, workers)
        return
    uvicorn.run(create_app(settings, freeze_heap=True), workers=1, **server_options(settings))


def app_from_environment() -> FastAPI:
    """One of several API processes (``api.workers``): the settings from the
    environment, metrics in the shared directory, replay control shared through Redis."""
    from streamrec.settings import load_settings

    settings = load_settings()
    metrics_dir = os.environ.get(SHARED_METRICS_ENV)
    if not metrics_dir:
        raise RuntimeError(f"{SHARED_METRICS_ENV} is not set: start the API with `streamrec serve`")
    return create_app(
        settings,
        metrics=ApiMetrics(shared_dir=Path(metrics_dir)),
        shared_replay=True,
        freeze_heap=True,
    )


def _report_task_end(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        logger.error("background task %s stopped", task.get_name(), exc_info=error)


@asynccontextmanager
async def _open_feast_reader(settings: Settings) -> AsyncIterator[FeatureReader]:
    # Feast is a heavy import; only a process that reads the real store pays for it.
    from api.adapters.feast_features import FeastFeatureReader
    from streamrec.infra import feast_redis
    from streamrec.infra.feast_store import open_store
    from streamrec.infra.seen import RedisSeenItems

    store = await anyio.to_thread.run_sync(open_store, settings)
    redis_url = settings.redis_connection_url
    seen = RedisSeenItems(redis_url, settings.topic_prefix) if redis_url else None
    feast = FeastFeatureReader(store, seen=seen)
    if redis_url is None or not feast_redis.supports(store.config):
        yield feast
        return
    # A plain Redis store: a request's user row and seen set in one round trip.
    from api.adapters.redis_features import RedisFeatureReader

    reader = RedisFeatureReader.over(feast, redis_url, settings.topic_prefix)
    try:
        yield reader
    finally:
        await reader.close()


def _default_ingest_counts(settings: Settings, features: FeatureReader | None) -> CountStorage:
    """POST /events counts in Redis beside the features it serves, so that every API
    process shares them; in this process for an app over injected adapters (tests)."""
    redis_url = settings.redis_connection_url
    if features is not None or redis_url is None:
        return memory_counts
    return redis_counts(redis_url, settings.topic_prefix)


def _default_features_marker(settings: Settings) -> FeaturesMarker | None:
    redis_url = settings.redis_connection_url
    if redis_url is None:
        return None
    return FeaturesMarker(redis_store(redis_url), settings.topic_prefix)


@asynccontextmanager
async def _open_kafka_sink(settings: Settings) -> AsyncIterator[EventSink]:
    from api.adapters.kafka_sink import open_kafka_sink

    async with open_kafka_sink(
        settings.bootstrap_servers,
        Topics(settings.topic_prefix),
        security=settings.kafka_security(),
    ) as sink:
        yield sink


def _kafka_replay_sink(settings: Settings) -> SinkFactory:
    def open_sink() -> tuple[Sink, Callable[[], None]]:
        # The CLI's sink; a replay closes its own.
        from replay.kafka_sink import KafkaSink

        sink = KafkaSink(
            settings.bootstrap_servers,
            Topics(settings.topic_prefix).interactions,
            **settings.kafka_security(),
        )
        return sink, sink.close

    return open_sink


@asynccontextmanager
async def _open_change_feed(settings: Settings) -> AsyncIterator[ChangeFeed]:
    url = settings.redis_connection_url
    if url is None:
        logger.warning("no Redis configured: SSE streams send their first list and pings only")
        yield InMemoryChangeFeed()
        return
    from api.adapters.redis_changes import open_redis_change_feed

    async with open_redis_change_feed(url, user_changed_channel(settings.topic_prefix)) as feed:
        yield feed


__all__ = ["app_from_environment", "create_app", "run"]
