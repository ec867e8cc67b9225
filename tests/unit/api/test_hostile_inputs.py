"""Issue 19 §1–§2: the inputs an attacker or a careless client sent, each one again.

Every bad input gets a clear 4xx whose body renders, and nothing is written.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from pydantic import SecretStr

from streams.events import RANK_MAX, Click, Interaction, RecommendationServed
from tests.unit.api.helpers import RunningApp, running_app

VALID = {"user_id": "u1", "item_id": "i1", "action": "view"}


async def _post_raw(api: RunningApp, body: bytes) -> Any:
    return await api.client.post(
        "/events", content=body, headers={"content-type": "application/json"}
    )


@pytest.mark.parametrize("path", ["/recommend", "/recommend/stream"])
@pytest.mark.parametrize("user_id", ["%20%20%20", "u%0D%0Aforged", "u%00", "%F0%9F%98%80" * 300])
async def test_bad_user_ids_in_the_query_are_422(api: RunningApp, path: str, user_id: str) -> None:
    response = await api.client.get(f"{path}?user_id={user_id}")
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["query", "user_id"]
    assert api.adapters.sink.events == []


@pytest.mark.parametrize("rating", [b"NaN", b"Infinity", b"-Infinity", b"1e309"])
async def test_non_finite_ratings_are_422_with_a_body_that_renders(
    api: RunningApp, rating: bytes
) -> None:
    body = b'{"user_id": "u1", "item_id": "i1", "action": "rate", "rating": ' + rating + b"}"
    response = await _post_raw(api, body)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "rating"]
    assert api.adapters.sink.events == []


@pytest.mark.parametrize(
    "field_value",
    [
        b'"\\ud800"',  # a lone surrogate
        b'"u1\\r\\nINFO forged log line"',
        b'"u1\\u0000"',
        b'"u1\\u2028x"',
        b'"   "',
        b"true",
    ],
)
async def test_bad_ids_in_bodies_are_422(api: RunningApp, field_value: bytes) -> None:
    body = b'{"user_id": ' + field_value + b', "item_id": "i1", "action": "view"}'
    response = await _post_raw(api, body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "user_id"]
    json.dumps(response.json(), allow_nan=False).encode("utf-8")  # renders as strict JSON
    assert api.adapters.sink.events == []


@pytest.mark.parametrize("rank", [2**31, 2**63, 0])
async def test_ranks_outside_int32_are_422(api: RunningApp, rank: int) -> None:
    body = {**VALID, "action": "click", "request_id": "r1", "rank": rank}
    response = await api.client.post("/events", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "rank"]
    assert api.adapters.sink.events == []


async def test_the_largest_rank_is_accepted(api: RunningApp) -> None:
    body = {**VALID, "action": "click", "request_id": "r1", "rank": RANK_MAX}
    assert (await api.client.post("/events", json=body)).status_code == 202
    [click] = api.adapters.sink.of_type(Click)
    assert click.rank == RANK_MAX


async def test_one_id_rule_in_queries_and_bodies(api: RunningApp) -> None:
    """ " u1" is u1 everywhere: the served list is logged under the id whose features
    were read, and an event is written under it."""
    response = await api.client.get("/recommend?user_id=%20u1%20&k=2")
    assert response.status_code == 200
    assert response.json()["user_id"] == "u1"
    await api.services.served_log.drain()
    [served] = api.adapters.sink.of_type(RecommendationServed)
    assert served.user_id == "u1"
    response = await api.client.post("/events", json={**VALID, "user_id": " u1\t"})
    assert response.status_code == 202
    [written] = api.adapters.sink.of_type(Interaction)
    assert written.user_id == "u1"


async def test_numeric_ids_are_accepted_as_strings(api: RunningApp) -> None:
    response = await api.client.post(
        "/events", json={"user_id": 196, "item_id": 242, "action": "view"}
    )
    assert response.status_code == 202, response.text
    [written] = api.adapters.sink.events
    assert (written.user_id, written.item_id) == ("196", "242")


async def test_event_time_in_seconds_names_the_unit(api: RunningApp) -> None:
    response = await api.client.post("/events", json={**VALID, "event_time": 1_700_000_000})
    assert response.status_code == 422
    message = response.json()["detail"][0]["msg"]
    assert "milliseconds" in message and "seconds" in message


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("2023-11-14T22:13:20Z", 1_700_000_000_000),
        ("2023-11-14T23:13:20+01:00", 1_700_000_000_000),
        ("2023-11-14T22:13:20.5", 1_700_000_000_500),  # no zone: UTC
    ],
)
async def test_event_time_as_iso_8601(api: RunningApp, text: str, ms: int) -> None:
    response = await api.client.post("/events", json={**VALID, "event_time": text})
    assert response.status_code == 202, response.text
    assert api.adapters.sink.events[0].event_time == ms


async def test_event_time_in_the_future_is_refused_and_the_past_accepted(api: RunningApp) -> None:
    now = int(time.time() * 1000)
    future = await api.client.post("/events", json={**VALID, "event_time": now + 3_600_000})
    assert future.status_code == 422
    assert "ahead of the server's clock" in future.json()["detail"][0]["msg"]
    dated_2099 = await api.client.post("/events", json={**VALID, "event_time": "2099-01-01T00:00Z"})
    assert dated_2099.status_code == 422
    assert api.adapters.sink.events == []
    slightly = await api.client.post("/events", json={**VALID, "event_time": now + 60_000})
    history = await api.client.post("/events", json={**VALID, "event_time": "2001-01-01T00:00Z"})
    assert (slightly.status_code, history.status_code) == (202, 202)


async def test_an_optional_past_limit(settings, adapters) -> None:  # type: ignore[no-untyped-def]
    limited = settings.model_copy(update={"events_max_past_seconds": 86_400.0})
    async with running_app(limited, adapters, wait_for_index=False) as app:
        old = await app.client.post("/events", json={**VALID, "event_time": "2001-01-01T00:00Z"})
    assert old.status_code == 422 and "older than" in old.json()["detail"][0]["msg"]


async def test_openapi_states_the_enforced_bounds(api: RunningApp) -> None:
    schema = (await api.client.get("/openapi.json")).json()
    event_in = schema["components"]["schemas"]["EventIn"]["properties"]
    rating = event_in["rating"]["anyOf"][0]
    assert (rating["minimum"], rating["maximum"]) == (0, 10)
    rank = event_in["rank"]["anyOf"][0]
    assert (rank["minimum"], rank["maximum"]) == (1, 2**31 - 1)
    user_id = event_in["user_id"]["anyOf"]
    assert user_id[0]["maxLength"] == 256 and "\\x00" in user_id[0]["pattern"]
    assert {"type": "integer"} in user_id
    [query_user] = [
        p for p in schema["paths"]["/recommend"]["get"]["parameters"] if p["name"] == "user_id"
    ]
    assert query_user["schema"]["anyOf"][0]["minLength"] == 1


async def test_a_10_mb_body_gets_a_small_413(api: RunningApp) -> None:
    huge = b'{"user_id": "' + b"x" * 10_000_000 + b'"}'
    response = await _post_raw(api, huge)
    assert response.status_code == 413
    assert len(response.content) < 200  # was the 10 MB input echoed in a 422
    assert (await api.client.get("/healthz")).status_code == 200


async def test_a_chunked_body_past_the_cap_is_413(api: RunningApp) -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(100):
            yield b"x" * 4096

    response = await api.client.post(
        "/events", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


async def test_a_422_never_echoes_a_large_input(api: RunningApp) -> None:
    body = json.dumps({**VALID, "item_id": "y" * 60_000}).encode()
    response = await _post_raw(api, body)
    assert response.status_code == 422
    assert len(response.content) < 2_000


async def test_ingest_keys_when_configured(settings, adapters) -> None:  # type: ignore[no-untyped-def]
    keyed = settings.model_copy(
        update={"ingest_keys": SecretStr("shop-key-0123456789,other-key-0123456")}
    )
    async with running_app(keyed, adapters, wait_for_index=False) as app:
        missing = await app.client.post("/events", json=VALID)
        wrong = await app.client.post(
            "/events", json=VALID, headers={"X-Ingest-Key": "guessed-key-000000"}
        )
        right = await app.client.post(
            "/events", json=VALID, headers={"X-Ingest-Key": "other-key-0123456"}
        )
    assert (missing.status_code, wrong.status_code, right.status_code) == (401, 403, 202)
    assert len(adapters.sink.events) == 1


async def test_rate_limit_per_client(settings, adapters) -> None:  # type: ignore[no-untyped-def]
    limited = settings.model_copy(update={"events_rate_limit": "5/minute"})
    async with running_app(limited, adapters, wait_for_index=False) as app:
        codes = [(await app.client.post("/events", json=VALID)).status_code for _ in range(7)]
        refused = await app.client.post("/events", json=VALID)
    assert codes == [202] * 5 + [429, 429]
    assert int(refused.headers["Retry-After"]) >= 1
    assert len(adapters.sink.events) == 5
