"""/readyz reports the features not ready while the online store is empty or wiped, and
/recommend keeps answering (fallbacks) meanwhile; in-memory store for the marker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from api.adapters.features_marker import FeaturesMarker
from api.main import create_app
from streamrec.infra.readiness import mark_pushed
from streamrec.settings import Settings
from tests.unit.api.helpers import Adapters


class DictStore:
    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.failure: str | None = None

    def get(self, name: str) -> Any:
        if self.failure is not None:
            raise ConnectionError(self.failure)
        return self.data.get(name)

    def set(self, name: str, value: str) -> None:
        self.data[name] = value.encode()


@asynccontextmanager
async def client_for(
    settings: Settings, adapters: Adapters, store: DictStore
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        settings,
        features=adapters.features,
        sink=adapters.sink,
        changes=adapters.changes,
        features_marker=FeaturesMarker(store, settings.topic_prefix),
    )
    async with app.router.lifespan_context(app):
        await asyncio.wait_for(app.state.services.state.index_built.wait(), 10)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def test_empty_store_is_not_ready_but_recommend_still_answers(
    settings: Settings, adapters: Adapters
) -> None:
    adapters.features.users.clear()
    adapters.features.items.clear()
    store = DictStore()
    async with client_for(settings, adapters, store) as client:
        response = await client.get("/readyz")
        assert response.status_code == 503
        body = response.json()
        assert body["failed"] == ["features"]
        assert "wiped" in body["checks"]["features"]["detail"]
        assert body["checks"]["online_store"]["ok"] is True  # the ping alone cannot tell
        recommend = await client.get("/recommend", params={"user_id": "u1"})
        assert recommend.status_code == 200
        # no item features: no popularity to rank, so the list may be empty, but never a 500
        assert recommend.json()["model_version"] == "baseline-item-knn-v1"

        mark_pushed(store, settings.topic_prefix, "backfill")
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert "pushed by backfill" in ready.json()["checks"]["features"]["detail"]

        store.data.clear()  # Redis restarted empty
        assert (await client.get("/readyz")).json()["failed"] == ["features"]


async def test_another_prefixs_marker_does_not_count(
    settings: Settings, adapters: Adapters
) -> None:
    store = DictStore()
    mark_pushed(store, "someone-else.", "worker")
    async with client_for(settings, adapters, store) as client:
        assert (await client.get("/readyz")).json()["failed"] == ["features"]


async def test_marker_store_failure_is_named(settings: Settings, adapters: Adapters) -> None:
    store = DictStore()
    store.failure = "redis refused the connection"
    async with client_for(settings, adapters, store) as client:
        body = (await client.get("/readyz")).json()
    assert body["failed"] == ["features"]
    # the client's error text stays out of the unauthenticated answer
    assert "redis refused" not in body["checks"]["features"]["detail"]
