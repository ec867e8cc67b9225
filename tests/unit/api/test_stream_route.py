"""GET /recommend/stream: a list at once, a new one when the user's features change."""

from __future__ import annotations

import asyncio
import json

import pytest

from api import stream_hub
from api.ports import RecentItems
from streams.events import RecommendationServed
from tests.unit.api.helpers import RunningApp, SseConnection, running_app


def connect(api: RunningApp, user_id: str, k: int = 3) -> SseConnection:
    return SseConnection(api.app, "/recommend/stream", f"user_id={user_id}&k={k}")


async def test_first_list_arrives_at_once(api: RunningApp) -> None:
    async with connect(api, "u1") as client:
        assert client.status == 200
        first = await client.next_event(timeout=2)
        assert first.event == "recommendations"
        body = json.loads(first.data)
        assert body["user_id"] == "u1"
        assert len(body["items"]) == 3
        assert first.id == body["request_id"]


async def test_a_change_notice_brings_a_list_from_the_new_features(api: RunningApp) -> None:
    features, changes = api.adapters.features, api.adapters.changes
    async with connect(api, "reader") as client:
        first = json.loads((await client.next_event()).data)
        assert first["items"][0]["reason"] == "popular right now"

        # The worker writes features first, then announces the change.
        features.users["reader"] = RecentItems(items=("a",), times=(1,))
        await changes.notify("reader")
        second = json.loads((await client.next_event()).data)
        assert second["items"][0]["item_id"] == "b"
        assert second["items"][0]["reason"] == "because you interacted with Alien"
        assert second["request_id"] != first["request_id"]


async def test_notices_for_other_users_do_not_send(api: RunningApp) -> None:
    async with connect(api, "reader") as client:
        await client.next_event()
        await api.adapters.changes.notify("someone-else")
        with pytest.raises(TimeoutError):
            await client.next_event(timeout=0.3)


async def test_a_burst_of_notices_sends_one_list(api: RunningApp) -> None:
    async with connect(api, "reader") as client:
        await client.next_event()
        for _ in range(5):
            await api.adapters.changes.notify("reader")
            await asyncio.sleep(0.01)
        await client.next_event()
        with pytest.raises(TimeoutError):
            await client.next_event(timeout=stream_hub.DEBOUNCE_SECONDS * 4)


async def test_each_list_sent_is_logged_as_served(api: RunningApp) -> None:
    async with connect(api, "reader") as client:
        first = json.loads((await client.next_event()).data)
        await api.adapters.changes.notify("reader")
        second = json.loads((await client.next_event()).data)
    await api.services.served_log.drain()
    served = api.adapters.sink.of_type(RecommendationServed)
    assert [s.request_id for s in served] == [first["request_id"], second["request_id"]]


async def test_disconnect_removes_the_subscription(api: RunningApp) -> None:
    changes = api.adapters.changes
    client = connect(api, "reader")
    async with client:
        await client.next_event()
        assert changes.subscriber_count("reader") == 1
        metrics = (await api.client.get("/metrics")).text
        assert "streamrec_api_sse_clients 1.0" in metrics
    assert changes.subscriber_count("reader") == 0
    assert changes.subscriber_count() == 0
    metrics = (await api.client.get("/metrics")).text
    assert "streamrec_api_sse_clients 0.0" in metrics


async def test_keep_alive_pings(start_app, settings) -> None:  # type: ignore[no-untyped-def]
    fast_pings = settings.model_copy(update={"sse_ping_seconds": 0.05})
    async with start_app(fast_pings) as app, connect(app, "u1") as client:
        await client.next_event()
        with pytest.raises(TimeoutError):
            await client.next_event(timeout=0.3)
        assert client.comments, "no keep-alive ping in 0.3s at a 0.05s ping interval"


async def test_k_out_of_bounds_is_422(api: RunningApp) -> None:
    response = await api.client.get("/recommend/stream", params={"user_id": "u1", "k": 0})
    assert response.status_code == 422


async def test_streams_per_user_and_in_total_are_capped(settings, adapters) -> None:  # type: ignore[no-untyped-def]
    capped = settings.model_copy(update={"sse_max_streams_per_user": 2, "sse_max_streams": 3})
    async with running_app(capped, adapters, wait_for_index=False) as api:
        async with connect(api, "a") as first, connect(api, "a") as second:
            await first.next_event()
            await second.next_event()
            third = await api.client.get("/recommend/stream?user_id=a")
            assert third.status_code == 429
            assert "2 open streams" in third.json()["detail"]
            async with connect(api, "b") as other:
                await other.next_event()
                full = await api.client.get("/recommend/stream?user_id=c")
                assert full.status_code == 503
        # closed streams free their places
        async with connect(api, "a") as again:
            assert again.status == 200
            await again.next_event()


async def test_one_list_per_change_however_many_streams_a_user_has(api: RunningApp) -> None:
    hub = api.app.state.stream_hub
    async with (
        connect(api, "reader") as one,
        connect(api, "reader") as two,
        connect(api, "reader") as three,
    ):
        lists = [json.loads((await c.next_event()).data) for c in (one, two, three)]
        assert len({body["request_id"] for body in lists}) == 1
        assert hub.lists_computed == 1
        api.adapters.features.users["reader"] = RecentItems(items=("a",), times=(1,))
        await api.adapters.changes.notify("reader")
        after = [json.loads((await c.next_event()).data) for c in (one, two, three)]
        assert len({body["request_id"] for body in after}) == 1
        assert hub.lists_computed == 2
        assert api.adapters.changes.subscriber_count("reader") == 1
