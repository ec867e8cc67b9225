"""POST /events: 202 once written, 422 and nothing written on bad input, 503 when down."""

from __future__ import annotations

from typing import Any

import pytest

from streams.events import Click, Interaction
from tests.unit.api.helpers import RunningApp

VALID = {"user_id": "u1", "item_id": "i1", "action": "view"}


async def test_accepted_event_is_written_and_its_id_returned(api: RunningApp) -> None:
    response = await api.client.post(
        "/events", json={**VALID, "action": "rate", "rating": 4.5, "event_time": 1_700_000_000_000}
    )
    assert response.status_code == 202
    [written] = api.adapters.sink.events
    assert response.json() == {"event_id": written.event_id, "click_event_id": None}
    assert isinstance(written, Interaction)
    assert (written.user_id, written.item_id, written.action) == ("u1", "i1", "rate")
    assert written.rating == 4.5
    assert written.source == "live"
    assert written.event_time == 1_700_000_000_000


async def test_event_time_defaults_to_now(api: RunningApp) -> None:
    response = await api.client.post("/events", json=VALID)
    assert response.status_code == 202
    [written] = api.adapters.sink.events
    assert written.event_time > 1_700_000_000_000


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"action": "like"}, "action"),
        ({"user_id": None}, "user_id"),
        ({"item_id": ""}, "item_id"),
        ({"action": "rate", "rating": 11}, "rating"),
        ({"action": "rate", "rating": -1}, "rating"),
        ({"action": "rate", "rating": "great"}, "rating"),
        ({"action": "rate"}, None),  # a rating is what "rate" means
        ({"event_time": 1_700_000_000}, "event_time"),  # seconds, not milliseconds
        ({"colour": "blue"}, "colour"),
        ({"action": "click", "request_id": "r1", "rank": 0}, "rank"),
    ],
)
async def test_bad_input_is_422_and_nothing_is_written(
    api: RunningApp, change: dict[str, Any], where: str | None
) -> None:
    body = {k: v for k, v in {**VALID, **change}.items() if v is not None}
    response = await api.client.post("/events", json=body)
    assert response.status_code == 422, response.text
    if where is not None:
        assert any(error["loc"][-1] == where for error in response.json()["detail"])
    assert api.adapters.sink.events == []


async def test_missing_field_is_422(api: RunningApp) -> None:
    response = await api.client.post("/events", json={"user_id": "u1", "action": "view"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "item_id"]
    assert api.adapters.sink.events == []


async def test_click_with_request_id_is_also_a_click(api: RunningApp) -> None:
    body = {**VALID, "action": "click", "request_id": "req-1", "rank": 3}
    response = await api.client.post("/events", json=body)
    assert response.status_code == 202
    [interaction] = api.adapters.sink.of_type(Interaction)
    [click] = api.adapters.sink.of_type(Click)
    assert response.json() == {"event_id": interaction.event_id, "click_event_id": click.event_id}
    assert (click.request_id, click.user_id, click.item_id, click.rank) == ("req-1", "u1", "i1", 3)
    assert click.event_time == interaction.event_time


async def test_click_rank_comes_from_the_served_list(api: RunningApp) -> None:
    served = (await api.client.get("/recommend", params={"user_id": "u9", "k": 3})).json()
    third = served["items"][2]["item_id"]
    body = {"user_id": "u9", "item_id": third, "action": "click"}
    response = await api.client.post("/events", json={**body, "request_id": served["request_id"]})
    assert response.status_code == 202
    [click] = api.adapters.sink.of_type(Click)
    assert click.rank == 3


async def test_click_of_an_item_the_request_did_not_serve_needs_a_rank(api: RunningApp) -> None:
    body = {**VALID, "action": "click", "request_id": "unknown-request"}
    response = await api.client.post("/events", json=body)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "rank"]
    assert "unknown-request" in error["msg"]
    assert api.adapters.sink.events == []


async def test_click_without_request_id_is_only_an_interaction(api: RunningApp) -> None:
    response = await api.client.post("/events", json={**VALID, "action": "click"})
    assert response.status_code == 202
    assert api.adapters.sink.of_type(Click) == []
    assert len(api.adapters.sink.of_type(Interaction)) == 1


async def test_broker_failure_is_503(api: RunningApp) -> None:
    api.adapters.sink.failure = "broker down"
    response = await api.client.post("/events", json=VALID)
    assert response.status_code == 503
    assert "event log unavailable" in response.json()["detail"]
    assert "broker down" in response.json()["detail"]


async def test_outcomes_are_counted(api: RunningApp) -> None:
    await api.client.post("/events", json=VALID)
    await api.client.post("/events", json={**VALID, "action": "like"})
    api.adapters.sink.failure = "broker down"
    await api.client.post("/events", json=VALID)
    metrics = (await api.client.get("/metrics")).text
    assert 'streamrec_api_events_accepted_total{action="view"} 1.0' in metrics
    assert 'streamrec_api_events_rejected_total{reason="invalid"} 1.0' in metrics
    assert 'streamrec_api_events_rejected_total{reason="unavailable"} 1.0' in metrics
