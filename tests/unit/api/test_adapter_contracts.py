"""The in-memory adapters, and the Feast reader over a local SQLite store, run the contracts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import pandas as pd
import pytest

from api.adapters.memory_changes import InMemoryChangeFeed
from api.adapters.memory_features import InMemoryFeatureReader
from api.adapters.memory_sink import InMemoryEventSink
from api.ports import ItemStats, RecentItems
from streamrec.settings import Settings
from tests.unit.api.contracts import (
    ChangeFeedContract,
    EventSinkContract,
    FeatureReaderContract,
    Notify,
    ReadBack,
    SeedFeatures,
)


class TestInMemoryFeatureReader(FeatureReaderContract):
    @pytest.fixture
    def reader(self) -> InMemoryFeatureReader:
        return InMemoryFeatureReader()

    @pytest.fixture
    def seed(self, reader: InMemoryFeatureReader) -> SeedFeatures:
        async def seed(users: dict[str, RecentItems], items: dict[str, ItemStats]) -> None:
            reader.users.update(users)
            reader.items.update(items)

        return seed


@pytest.fixture(scope="module")
def sqlite_feast_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A Feast store with the project's definitions applied, online rows in SQLite."""
    pytest.importorskip("feast")
    from streamrec.infra.feast_store import apply_definitions, open_store

    root: Path = tmp_path_factory.mktemp("feast")
    settings = Settings(data_dir=root / "data", state_dir=root / "state", redis_url="none")
    store = open_store(settings)
    apply_definitions(store)
    yield store


class TestFeastFeatureReaderOnSqlite(FeatureReaderContract):
    @pytest.fixture
    def reader(self, sqlite_feast_store: object) -> object:
        from api.adapters.feast_features import FeastFeatureReader

        return FeastFeatureReader(sqlite_feast_store)  # type: ignore[arg-type]

    @pytest.fixture
    def seed(self, sqlite_feast_store: object) -> SeedFeatures:
        store = sqlite_feast_store

        def write(users: dict[str, RecentItems], items: dict[str, ItemStats]) -> None:
            now = pd.Timestamp.now(tz="UTC")
            if users:
                store.write_to_online_store(  # type: ignore[attr-defined]
                    "user_recent",
                    pd.DataFrame(
                        {
                            "user_id": list(users),
                            "recent_items": [list(r.items) for r in users.values()],
                            "recent_times": [list(r.times) for r in users.values()],
                            "interaction_count": [r.interaction_count for r in users.values()],
                            "last_event_time": [r.last_event_time for r in users.values()],
                            "event_timestamp": now,
                        }
                    ),
                )
            if items:
                store.write_to_online_store(  # type: ignore[attr-defined]
                    "item_stats",
                    pd.DataFrame(
                        {
                            "item_id": list(items),
                            "interaction_count": [s.interaction_count for s in items.values()],
                            "click_count": [s.click_count for s in items.values()],
                            "purchase_count": [s.purchase_count for s in items.values()],
                            "last_event_time": [s.last_event_time for s in items.values()],
                            "trend_score": [s.trend_score for s in items.values()],
                            # the worker's join and window; the API does not read them
                            "impression_count": 0,
                            "attributed_click_count": 0,
                            "attributed_ctr": 0.05,
                            "interactions_1h": 0,
                            "interactions_1h_end": 0,
                            "covisit_items": [list(s.covisit_items) for s in items.values()],
                            "covisit_weights": [list(s.covisit_weights) for s in items.values()],
                            "covisit_total": [s.covisit_total for s in items.values()],
                            "event_timestamp": now,
                        }
                    ),
                )

        async def seed(users: dict[str, RecentItems], items: dict[str, ItemStats]) -> None:
            await anyio.to_thread.run_sync(write, users, items)

        return seed


class TestInMemoryEventSink(EventSinkContract):
    @pytest.fixture
    def sink(self) -> InMemoryEventSink:
        return InMemoryEventSink()

    @pytest.fixture
    def read_back(self, sink: InMemoryEventSink) -> ReadBack:
        async def read_back(event_ids: list[str]) -> list:  # type: ignore[type-arg]
            return [e for e in sink.events if e.event_id in event_ids]

        return read_back

    @pytest.fixture
    def failing_sink(self) -> InMemoryEventSink:
        sink = InMemoryEventSink()
        sink.failure = "broker down"
        return sink


class TestInMemoryChangeFeed(ChangeFeedContract):
    @pytest.fixture
    def feed(self) -> InMemoryChangeFeed:
        return InMemoryChangeFeed()

    @pytest.fixture
    def notify(self, feed: InMemoryChangeFeed) -> Notify:
        return feed.notify
