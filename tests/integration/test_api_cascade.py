"""The API serves the champion cascade on real features: Feast on the running Redis, Kafka
for served events, a local MLflow registry. Rows are written the way the worker writes
them, so the user context (interaction count, last event time) comes from the real store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from feast import FeatureStore

from api.main import create_app
from streamrec.infra.feast_store import apply_definitions, open_store
from streamrec.settings import Settings
from streams.folding import ItemState, UserState, item_rows, stamp, user_rows
from streams.sinks import ITEM_PUSH_SOURCE, USER_PUSH_SOURCE, FeastFeatureSink
from tests.unit.api.helpers import TINY_SEQUENCES, TINY_TITLES, write_log
from tests.unit.api.model_sets import ITEMS, TinySet, open_registry, register_set

pytestmark = pytest.mark.integration

# 1998: the replayed log's own time; "now" must follow it, not the wall clock.
NOW = 885_000_000_000
LOAD_SECONDS = 60.0


@pytest.fixture
def store(live_settings: Settings) -> Iterator[FeatureStore]:
    feature_store = open_store(live_settings)
    apply_definitions(feature_store)
    yield feature_store
    feature_store.teardown()


def _seed(store: FeatureStore) -> None:
    sink = FeastFeatureSink(store)
    user = UserState(
        items=["a", "gone-from-vocab", "c"],
        times=[NOW, NOW - 1000, NOW - 2000],
        event_ids=["e3", "e2", "e1"],
        interaction_count=120,
        last_event_time=NOW,
    )
    stamp(user)
    sink.push(USER_PUSH_SOURCE, user_rows([("newcomer", user)]))
    states = []
    for n, item in enumerate(ITEMS):
        state = ItemState(
            interaction_count=20 - n,
            click_count=n % 2,
            last_event_time=NOW - n * 3_600_000,
            trend_score=float(20 - n),
        )
        stamp(state)
        states.append((item, state))
    sink.push(ITEM_PUSH_SOURCE, item_rows(states))


async def test_the_cascade_serves_real_online_features(
    live_settings: Settings, store: FeatureStore
) -> None:
    settings = live_settings.model_copy(
        update={"item_cache_seconds": 0.2, "model_poll_seconds": 0.2}
    )
    write_log(settings.data_dir, TINY_SEQUENCES, titles=TINY_TITLES)
    champion = register_set(open_registry(settings), TinySet(seed=4, n_candidates=3))
    await asyncio.to_thread(_seed, store)

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        services = app.state.services

        async def ready() -> None:
            while True:
                serving = services.champion.current
                if serving is not None and serving.items.with_stats == len(ITEMS):
                    return
                await asyncio.sleep(0.1)

        await asyncio.wait_for(ready(), LOAD_SECONDS)
        assert services.champion.current.items.latest_event_time == NOW
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get("/recommend", params={"user_id": "newcomer", "k": 4})
            assert response.status_code == 200
            body = response.json()
            ready_body = (await client.get("/readyz")).json()
        await services.served_log.drain(timeout=10)

    assert body["model_version"] == champion.label
    items = [item["item_id"] for item in body["items"]]
    assert not {"a", "c"} & set(items)
    # Not in the vocabulary: recall (3 candidates) comes from "a" and "c", whose groups lead.
    assert sorted(items) == ["b", "d", "x"]
    assert {item["reason"] for item in body["items"]} <= {
        "because you interacted with Alien",
        "because you interacted with Casablanca",
    }
    assert ready_body["checks"]["models"] == {"ok": True, "detail": champion.label}
