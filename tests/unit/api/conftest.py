"""Fixtures for the API tests: in-memory adapters, a tiny event log, a running app."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from api.adapters.memory_changes import InMemoryChangeFeed
from api.adapters.memory_features import InMemoryFeatureReader
from api.adapters.memory_sink import InMemoryEventSink
from streamrec.settings import Settings
from tests.unit.api.helpers import (
    TINY_SEQUENCES,
    TINY_TITLES,
    Adapters,
    RunningApp,
    running_app,
    write_log,
)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        state_dir=tmp_path / "state",
        redis_url="none",
        item_cache_seconds=0.05,
        sse_ping_seconds=15.0,
        api_key=None,
    )


@pytest.fixture
def adapters() -> Adapters:
    return Adapters(InMemoryFeatureReader(), InMemoryEventSink(), InMemoryChangeFeed())


@pytest.fixture
def start_app(
    settings: Settings, adapters: Adapters
) -> Callable[..., AbstractAsyncContextManager[RunningApp]]:
    """``async with start_app() as api:`` — an app over the in-memory adapters."""

    def start(
        custom: Settings | None = None, **options: bool
    ) -> AbstractAsyncContextManager[RunningApp]:
        return running_app(custom or settings, adapters, **options)

    return start


@pytest.fixture
async def api(settings: Settings, adapters: Adapters) -> AsyncIterator[RunningApp]:
    """The app over the tiny log, with in-memory adapters."""
    write_log(settings.data_dir, TINY_SEQUENCES, titles=TINY_TITLES)
    async with running_app(settings, adapters) as running:
        yield running
