"""The admin experiment routes and the variant in answers, over the in-memory adapters
(the Redis store and the worker's fold have their integration test)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr

from api.experiments.definitions import ExperimentSpec, assign
from streamrec.settings import Settings
from streams.events import RecommendationServed
from tests.unit.api.helpers import (
    TINY_SEQUENCES,
    TINY_TITLES,
    Adapters,
    RunningApp,
    running_app,
    write_log,
)

API_KEY = "0123456789abcdef-test-key"
HEADERS = {"X-API-Key": API_KEY}
AB = {
    "name": "pop-vs-random",
    "mode": "ab",
    "variants": [
        {"name": "pop", "strategy": "popularity", "share": 0.5},
        {"name": "rand", "strategy": "random", "share": 0.5},
    ],
}


@pytest.fixture
async def keyed(settings: Settings, adapters: Adapters) -> AsyncIterator[RunningApp]:
    write_log(settings.data_dir, TINY_SEQUENCES, titles=TINY_TITLES)
    custom = settings.model_copy(update={"api_key": SecretStr(API_KEY)})
    async with running_app(custom, adapters) as running:
        yield running


async def test_the_routes_need_the_api_key(keyed: RunningApp) -> None:
    client = keyed.client
    assert (await client.get("/admin/experiments")).status_code == 401
    wrong = {"X-API-Key": "wrong-key-123456"}
    assert (await client.post("/admin/experiments", json=AB, headers=wrong)).status_code == 403


async def test_create_list_read_and_stop(keyed: RunningApp) -> None:
    client = keyed.client
    created = await client.post("/admin/experiments", json=AB, headers=HEADERS)
    assert created.status_code == 201, created.text
    listed = (await client.get("/admin/experiments", headers=HEADERS)).json()
    assert [e["name"] for e in listed["experiments"]] == ["pop-vs-random"]
    table = (await client.get("/admin/experiments/pop-vs-random", headers=HEADERS)).json()
    assert [v["name"] for v in table["variants"]] == ["pop", "rand"]
    assert table["variants"][0]["impressions"] == 0 and table["p_value"] is None
    # a change of shares keeps the experiment's place
    changed = {
        **AB,
        "variants": [{**AB["variants"][0], "share": 0.9}, {**AB["variants"][1], "share": 0.1}],
    }
    again = await client.post("/admin/experiments", json=changed, headers=HEADERS)
    assert again.json()["created_ms"] == created.json()["created_ms"]
    stopped = await client.delete("/admin/experiments/pop-vs-random", headers=HEADERS)
    assert stopped.status_code == 200
    assert (
        await client.get("/admin/experiments/pop-vs-random", headers=HEADERS)
    ).status_code == 404
    assert (
        await client.delete("/admin/experiments/pop-vs-random", headers=HEADERS)
    ).status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {**AB, "variants": AB["variants"][:1]},
        {**AB, "name": "Nope Nope"},
        {**AB, "mode": "bandit"},
        "not an object",
    ],
)
async def test_bad_definitions_are_422(keyed: RunningApp, body: object) -> None:
    response = await keyed.client.post("/admin/experiments", json=body, headers=HEADERS)
    assert response.status_code == 422


async def test_answers_and_served_events_carry_the_assigned_variant(keyed: RunningApp) -> None:
    client = keyed.client
    await client.post("/admin/experiments", json=AB, headers=HEADERS)
    spec = ExperimentSpec.model_validate(AB)
    seen = set()
    for user in [f"visitor-{i}" for i in range(30)]:
        body = (await client.get("/recommend", params={"user_id": user, "k": 3})).json()
        expected = assign(spec, user).name
        assert body["experiment"] == "pop-vs-random" and body["variant"] == expected
        assert body["model_version"] == ("popularity" if expected == "pop" else "random")
        assert {item["stage"] for item in body["items"]} == {body["model_version"]}
        # sticky
        again = (await client.get("/recommend", params={"user_id": user, "k": 3})).json()
        assert again["variant"] == expected
        seen.add(expected)
    assert seen == {"pop", "rand"}
    await keyed.services.served_log.drain()
    served = [e for e in keyed.adapters.sink.events if isinstance(e, RecommendationServed)]
    assert served and all(e.experiment == "pop-vs-random" for e in served)
    assert all(i.variant == e.variant for e in served for i in e.items)
    # stopped: back to the default serving at once in this process
    await client.delete("/admin/experiments/pop-vs-random", headers=HEADERS)
    body = (await client.get("/recommend", params={"user_id": "visitor-1", "k": 3})).json()
    assert body["variant"] == "default" and body["experiment"] is None


async def test_an_interleaved_list_credits_each_item_to_its_team(keyed: RunningApp) -> None:
    client = keyed.client
    body = {**AB, "name": "mix", "mode": "interleave", "exploration": 0.0}
    assert (await client.post("/admin/experiments", json=body, headers=HEADERS)).status_code == 201
    answer = (await client.get("/recommend", params={"user_id": "u1", "k": 4})).json()
    assert answer["variant"] == "interleaved" and answer["experiment"] == "mix"
    assert answer["model_version"] == "popularity & random"
    assert {item["stage"] for item in answer["items"]} == {"interleaved"}
    teams = [item["variant"] for item in answer["items"]]
    assert set(teams) <= {"pop", "rand"} and len(teams) == 4
    assert abs(teams.count("pop") - teams.count("rand")) <= 1


async def test_exploration_logs_propensities(keyed: RunningApp) -> None:
    client = keyed.client
    body = {**AB, "name": "explore", "exploration": 0.3}
    await client.post("/admin/experiments", json=body, headers=HEADERS)
    answer = (await client.get("/recommend", params={"user_id": "visitor-2", "k": 3})).json()
    assert all(0 < item["propensity"] <= 1 for item in answer["items"])
