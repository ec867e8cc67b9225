"""GET /recommend over the tiny log and in-memory adapters."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from api import state as api_state
from api.catalogue import read_events
from api.ports import RecentItems
from api.serving import service as api_service
from streams.events import RecommendationServed
from tests.unit.api.helpers import TINY_SEQUENCES, TINY_TITLES, RunningApp, write_log


def recent(*items: str) -> RecentItems:
    """Recent items, newest first, one second apart."""
    return RecentItems(items=items, times=tuple(range(len(items), 0, -1)))


async def test_response_shape(api: RunningApp) -> None:
    response = await api.client.get("/recommend", params={"user_id": "u1", "k": 3})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "request_id",
        "user_id",
        "variant",
        "experiment",
        "model_version",
        "items",
    }
    assert body["experiment"] is None
    assert body["user_id"] == "u1"
    assert body["variant"] == "default"
    assert body["model_version"] == "baseline-item-knn-v1"
    assert len(body["items"]) == 3
    assert [item["rank"] for item in body["items"]] == [1, 2, 3]
    for item in body["items"]:
        assert set(item) == {"item_id", "rank", "score", "reason", "title", "category", "stage"}
    scores = [item["score"] for item in body["items"]]
    assert scores == sorted(scores, reverse=True)


async def test_k_defaults_to_ten_and_is_capped_by_the_catalogue(api: RunningApp) -> None:
    body = (await api.client.get("/recommend", params={"user_id": "nobody"})).json()
    # The tiny log knows 7 items; asking for 10 gives all of them, no more, no repeats.
    ids = [item["item_id"] for item in body["items"]]
    assert sorted(ids) == ["a", "b", "c", "d", "p", "q", "x"]


@pytest.mark.parametrize("k", ["0", "101", "-1", "ten"])
async def test_k_out_of_bounds_is_422(api: RunningApp, k: str) -> None:
    response = await api.client.get("/recommend", params={"user_id": "u1", "k": k})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["query", "k"]
    assert api.adapters.sink.events == []


@pytest.mark.parametrize("k", ["1", "100"])
async def test_k_bounds_are_inclusive(api: RunningApp, k: str) -> None:
    response = await api.client.get("/recommend", params={"user_id": "u1", "k": k})
    assert response.status_code == 200


async def test_missing_user_id_is_422(api: RunningApp) -> None:
    response = await api.client.get("/recommend", params={"k": 3})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "user_id"]


async def test_unknown_user_gets_the_popular_list(api: RunningApp) -> None:
    response = await api.client.get("/recommend", params={"user_id": "never-seen", "k": 2})
    assert response.status_code == 200
    items = response.json()["items"]
    assert [item["item_id"] for item in items] == ["p", "a"]  # p: 5 events; a, b, c, d: 2
    assert {item["reason"] for item in items} == {"popular right now"}


async def test_seen_items_are_filtered_and_reason_names_the_recent_item(api: RunningApp) -> None:
    api.adapters.features.users["reader"] = recent("a", "p")
    response = await api.client.get("/recommend", params={"user_id": "reader", "k": 10})
    items = response.json()["items"]
    ids = [item["item_id"] for item in items]
    assert "a" not in ids and "p" not in ids
    assert items[0]["item_id"] == "b"
    assert items[0]["reason"] == "because you interacted with Alien"
    q = next(item for item in items if item["item_id"] == "q")
    assert q["reason"] == "because you interacted with p"  # no title in the catalogue


async def test_a_served_event_is_written(api: RunningApp) -> None:
    body = (await api.client.get("/recommend", params={"user_id": "u1", "k": 2})).json()
    await api.services.served_log.drain()
    [served] = api.adapters.sink.of_type(RecommendationServed)
    assert served.request_id == body["request_id"]
    assert served.user_id == "u1"
    # The event has what was served; the answer adds the catalogue's title and category.
    event_fields = ("item_id", "rank", "score", "reason")
    assert [i.model_dump() for i in served.items] == [
        {k: item[k] for k in event_fields} for item in body["items"]
    ]


async def test_the_list_is_served_when_the_served_event_cannot_be_written(
    api: RunningApp,
) -> None:
    api.adapters.sink.failure = "broker down"
    response = await api.client.get("/recommend", params={"user_id": "u1", "k": 2})
    assert response.status_code == 200
    assert len(response.json()["items"]) == 2
    await api.services.served_log.drain()
    metrics = (await api.client.get("/metrics")).text
    assert "streamrec_api_served_event_failures_total 1.0" in metrics


async def test_store_failure_degrades_to_the_popular_list(api: RunningApp) -> None:
    api.adapters.features.users["reader"] = recent("a")
    api.adapters.features.failure = "redis down"
    response = await api.client.get("/recommend", params={"user_id": "reader", "k": 1})
    assert response.status_code == 200
    assert response.json()["items"][0]["item_id"] == "p"
    metrics = (await api.client.get("/metrics")).text
    assert 'streamrec_api_feature_read_failures_total{view="user_recent"} 1.0' in metrics


async def test_answers_with_no_event_log(start_app) -> None:  # type: ignore[no-untyped-def]
    async with start_app() as app:
        response = await app.client.get("/recommend", params={"user_id": "u1"})
        assert response.status_code == 200
        assert response.json()["items"] == []


@pytest.fixture
def slow_log(settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:  # type: ignore[no-untyped-def]
    """The tiny log, whose events the API reads only once the returned event is set."""
    write_log(settings.data_dir, TINY_SEQUENCES, titles=TINY_TITLES)
    release = threading.Event()

    def slow_events(log_dir: Path) -> pd.DataFrame:
        release.wait(10)
        return read_events(log_dir)

    monkeypatch.setattr(api_state, "read_events", slow_events)
    yield release
    release.set()


async def test_answers_popular_items_when_the_index_takes_too_long(
    start_app,
    slow_log: threading.Event,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    monkeypatch.setattr(api_service, "FIRST_INDEX_WAIT_SECONDS", 0.3)
    async with start_app(wait_for_index=False) as app:
        app.adapters.features.users["reader"] = recent("a")
        await asyncio.wait_for(app.services.state.catalogue_loaded.wait(), 10)
        ready = await app.client.get("/readyz")
        assert ready.status_code == 503, ready.json()
        assert "indexed" in ready.json()["checks"]["recommender"]["detail"]
        early = (await app.client.get("/recommend", params={"user_id": "reader"})).json()
        assert early["items"][0]["item_id"] == "p"
        assert {i["reason"] for i in early["items"]} == {"popular right now"}
        assert "a" not in [i["item_id"] for i in early["items"]]

        slow_log.set()
        await asyncio.wait_for(app.services.state.index_built.wait(), 10)
        later = (await app.client.get("/recommend", params={"user_id": "reader"})).json()
        assert later["items"][0]["item_id"] == "b"
        assert later["items"][0]["reason"] == "because you interacted with Alien"


async def test_a_request_in_the_first_seconds_waits_for_the_index(  # type: ignore[no-untyped-def]
    start_app, slow_log: threading.Event
) -> None:
    """The API's first requests get the kNN's list once the log is read, not popularity."""
    async with start_app(wait_for_index=False) as app:
        app.adapters.features.users["reader"] = recent("a")
        await asyncio.wait_for(app.services.state.catalogue_loaded.wait(), 10)
        request = asyncio.create_task(app.client.get("/recommend", params={"user_id": "reader"}))
        await asyncio.sleep(0.3)
        assert not request.done()  # waiting for the index, not answering popularity
        slow_log.set()
        first = (await asyncio.wait_for(request, 10)).json()
        assert first["items"][0]["item_id"] == "b"
        assert first["items"][0]["reason"] == "because you interacted with Alien"
        assert (await app.client.get("/readyz")).status_code == 200
