"""The cockpit page's read-only data: prepared logs, users, a user's interests and recent
items, trending items and the system's health. Open like /recommend; replay control is
under /admin/replay behind the key.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from pydantic import BaseModel

from api.cockpit import (
    UserDirectory,
    final_stage,
    hour_candidates,
    interest_shares,
    trending_hour,
)
from api.deps import ServicesDep
from api.log_health import LogHealthProbe
from api.ports import CockpitFeatures, PortUnavailable
from api.replay_control import UnknownSource, log_range, prepared_sources
from api.routes.params import UserIdParam
from api.serving.baseline import MODEL_VERSION
from api.serving.champion import ChampionWatcher
from serving.cascade import stream_clock
from streamrec.settings import Settings

router = APIRouter(prefix="/cockpit", tags=["cockpit"])

# The user directory is re-read when the log's files change, checked at most this often.
DIRECTORY_CHECK_SECONDS = 30.0


class LogOut(BaseModel):
    source: str
    first_ms: int
    last_ms: int
    events: int


class UsersOut(BaseModel):
    users: list[str]
    total: int


class RandomUserOut(BaseModel):
    user_id: str


class RecentItemOut(BaseModel):
    item_id: str
    event_time: int
    title: str | None
    categories: list[str]


class UserOut(BaseModel):
    user_id: str
    known: bool  # False: the online store has never seen this user
    interaction_count: int | None
    last_event_time: int | None
    interests: dict[str, float]  # category -> share of the recent items
    # category -> share over the Spark job's long window (`user_interests`), when it ran
    interests_long: dict[str, float]
    interests_long_window_end: int | None
    recent: list[RecentItemOut]


class TrendingItemOut(BaseModel):
    item_id: str
    title: str | None
    last_hour: float  # interactions in the event-time hour before the stream's clock
    spark_1h: float | None  # the Spark job's 1-hour window count, when it is current
    interactions: int  # all time


class HealthOut(BaseModel):
    model_version: str
    stage: str
    worker_lag: int | None
    events_per_second: float | None
    log_end: int | None
    freshness_p95_seconds: float | None  # event appended -> features online (the worker)
    sse_update_p95_seconds: float | None  # features changed -> new list on a stream (here)
    sse_clients: int
    error: str | None


class _Directory:
    """The user directory, read in a worker thread and swapped whole when the log changes."""

    def __init__(self) -> None:
        self.value = UserDirectory({})
        self._checked = -DIRECTORY_CHECK_SECONDS
        self._lock = asyncio.Lock()

    async def current(self, services: ServicesDep) -> UserDirectory:
        async with self._lock:
            now = time.monotonic()
            if now - self._checked >= DIRECTORY_CHECK_SECONDS:
                self._checked = now
                log_dir = services.settings.datasets_dir
                if self.value.signature != services.state.catalogue.signature or not (
                    self.value.counts
                ):
                    self.value = await anyio.to_thread.run_sync(UserDirectory.read, log_dir)
            return self.value


def _directory(request: Request) -> _Directory:
    if not hasattr(request.app.state, "user_directory"):
        request.app.state.user_directory = _Directory()
    return request.app.state.user_directory


def _health_probe(request: Request, services: ServicesDep) -> LogHealthProbe:
    if not hasattr(request.app.state, "log_health"):
        settings = services.settings
        request.app.state.log_health = LogHealthProbe(
            settings.bootstrap_servers,
            settings.topic_prefix,
            services.metrics.registry,
            prometheus_url=f"http://127.0.0.1:{settings.prometheus_port}",
        )
    return request.app.state.log_health


class _CockpitReader:
    """The reader of the cockpit's extra features: the request reader itself when it has
    them (the in-memory one), else a Feast reader opened on first use."""

    def __init__(self) -> None:
        self._reader: CockpitFeatures | None = None
        self._lock = asyncio.Lock()

    async def get(self, services: ServicesDep) -> CockpitFeatures:
        async with self._lock:
            if self._reader is None:
                if isinstance(services.features, CockpitFeatures):
                    self._reader = services.features
                else:
                    self._reader = await anyio.to_thread.run_sync(
                        _open_feast_cockpit, services.settings
                    )
            return self._reader


def _open_feast_cockpit(settings: Settings) -> CockpitFeatures:
    from api.adapters.feast_cockpit import FeastCockpitReader
    from streamrec.infra.feast_store import open_store

    try:
        return FeastCockpitReader(open_store(settings))
    except Exception as exc:
        raise PortUnavailable(f"online store: {type(exc).__name__}: {exc}") from exc


async def _cockpit_features(request: Request, services: ServicesDep) -> CockpitFeatures:
    if not hasattr(request.app.state, "cockpit_reader"):
        request.app.state.cockpit_reader = _CockpitReader()
    try:
        return await request.app.state.cockpit_reader.get(services)
    except PortUnavailable as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc


DirectoryDep = Annotated[_Directory, Depends(_directory)]
HealthProbeDep = Annotated[LogHealthProbe, Depends(_health_probe)]
CockpitDep = Annotated[CockpitFeatures, Depends(_cockpit_features)]


@router.get("/logs", response_model=list[LogOut])
async def logs(services: ServicesDep) -> list[LogOut]:
    data_dir = services.settings.data_dir
    out = []
    for source in await anyio.to_thread.run_sync(prepared_sources, data_dir):
        try:
            extent = await anyio.to_thread.run_sync(log_range, data_dir, source)
        except UnknownSource:
            continue  # empty, or removed while we looked
        out.append(LogOut(**extent.__dict__))
    return out


@router.get("/users", response_model=UsersOut)
async def users(
    services: ServicesDep,
    directory: DirectoryDep,
    q: Annotated[str, Query(max_length=256)] = "",
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> UsersOut:
    current = await directory.current(services)
    return UsersOut(users=current.search(q, limit), total=len(current.counts))


@router.get("/users/random", response_model=RandomUserOut)
async def random_user(services: ServicesDep, directory: DirectoryDep) -> RandomUserOut:
    current = await directory.current(services)
    user = current.random_active(random.Random())
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no prepared log has users yet")
    return RandomUserOut(user_id=user)


@router.get("/user", response_model=UserOut)
async def user(user_id: UserIdParam, services: ServicesDep, cockpit: CockpitDep) -> UserOut:
    try:
        recent = await services.features.user_recent(user_id)
        long = await cockpit.user_interests(user_id)
    except PortUnavailable as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc
    catalogue = services.state.catalogue
    items = [] if recent is None else list(zip(recent.items, recent.times, strict=False))
    return UserOut(
        user_id=user_id,
        known=recent is not None,
        interaction_count=None if recent is None else recent.interaction_count,
        last_event_time=None if recent is None else recent.last_event_time,
        interests=interest_shares(recent, catalogue.categories),
        interests_long={} if long is None else long.weights,
        interests_long_window_end=None if long is None else long.window_end,
        recent=[
            RecentItemOut(
                item_id=item,
                event_time=when,
                title=catalogue.titles.get(item),
                categories=list(catalogue.categories.get(item, ())),
            )
            for item, when in items
        ],
    )


@router.get("/trending", response_model=list[TrendingItemOut])
async def trending_items(
    services: ServicesDep, cockpit: CockpitDep, k: Annotated[int, Query(ge=1, le=100)] = 10
) -> list[TrendingItemOut]:
    """The items with the most interactions in the last hour of event time, "now" being
    the stream's clock (docs/design.md, "The clock")."""
    stats = services.state.online_stats
    now = stream_clock([s.last_event_time or 0 for s in stats.values()])
    try:
        hours = await cockpit.item_hours(hour_candidates(stats, now))
    except PortUnavailable as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc
    titles = services.state.catalogue.titles
    return [
        TrendingItemOut(
            item_id=t.item_id,
            title=titles.get(t.item_id),
            last_hour=round(t.last_hour, 1),
            spark_1h=t.spark_1h,
            interactions=t.interactions,
        )
        for t in trending_hour(hours, stats, now, k)
    ]


@router.get("/health", response_model=HealthOut)
async def health(services: ServicesDep, probe: HealthProbeDep) -> HealthOut:
    log = await probe.read()
    version = _model_version(services.champion)
    return HealthOut(
        model_version=version,
        stage=final_stage(version),
        worker_lag=log.worker_lag,
        events_per_second=None if log.events_per_second is None else round(log.events_per_second),
        log_end=log.log_end,
        freshness_p95_seconds=log.freshness_p95_seconds,
        sse_update_p95_seconds=log.sse_update_p95_seconds,
        sse_clients=services.changes.subscriber_count(),
        error=log.error,
    )


def _model_version(champion: ChampionWatcher) -> str:
    current = champion.current
    return current.cascade.label if current is not None else MODEL_VERSION
