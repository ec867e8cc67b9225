"""The API serves the champion cascade from a real MLflow registry (SQLite + local files).

The in-memory adapters stand in for the online store and the broker; the registry,
the artifacts and the models are real.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from mlflow import MlflowClient
from prometheus_client.parser import text_string_to_metric_families

from api.ports import ItemStats, RecentItems
from api.serving import service as api_service
from api.serving.baseline import MODEL_VERSION
from api.serving.champion import NO_CHAMPION, ChampionWatcher
from serving.cascade import ServingSet
from serving.loading import SetLoadError
from streamrec.infra.model_store import ChampionSet
from streamrec.settings import Settings
from streams.events import RecommendationServed
from tests.unit.api.helpers import (
    BASE_TIME,
    TINY_SEQUENCES,
    TINY_TITLES,
    Adapters,
    RunningApp,
    running_app,
    write_log,
)
from tests.unit.api.model_sets import (
    GROUPS,
    ITEMS,
    TinySet,
    open_registry,
    promote_set,
    register_set,
)

LOAD_SECONDS = 30.0


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _settings(root: Path) -> Settings:
    return Settings(
        data_dir=root / "data",
        state_dir=root / "state",
        redis_url="none",
        item_cache_seconds=0.05,
        model_poll_seconds=0.1,
        api_key=None,
        # A kept list lives exactly as long as its item features (one test moves this).
        api_answer_max_item_age_seconds=0.0,
    )


@pytest.fixture(scope="module")
def registry(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Settings, MlflowClient, ChampionSet]:
    """One registry for the module (creating one runs MLflow's migrations): set 1 is champion."""
    settings = _settings(tmp_path_factory.mktemp("registry")).resolved()
    client = open_registry(settings)
    champion = register_set(client, TinySet(seed=1))
    write_log(settings.data_dir, TINY_SEQUENCES, titles=TINY_TITLES)
    return settings, client, champion


def _online_items() -> dict[str, ItemStats]:
    # Event times from the tiny log's era, not today: "now" must come from these.
    return {
        item: ItemStats(
            interaction_count=10 - n % 5,
            click_count=n % 3,
            last_event_time=BASE_TIME + n * 60_000,
            trend_score=float(10 - n % 5),
        )
        for n, item in enumerate(ITEMS)
    }


async def _wait_until(api: RunningApp, served: Callable[[ServingSet], bool]) -> None:
    """Until the served set (once there is one) satisfies ``served``."""

    async def reached() -> None:
        while True:
            current = api.services.champion.current
            if current is not None and served(current):
                return
            await asyncio.sleep(0.02)

    await asyncio.wait_for(reached(), LOAD_SECONDS)


async def _wait_for_set(api: RunningApp, label: str) -> None:
    await _wait_until(api, lambda current: current.cascade.label == label)


async def _wait_for_items(api: RunningApp, items: int) -> None:
    """Until the served set's features hold ``items`` store rows: a set loaded before the
    API's first item refresh is built again (swapped) once the rows arrive."""
    await _wait_until(api, lambda current: current.items.with_stats == items)


@pytest.fixture
async def served(
    registry: tuple[Settings, MlflowClient, ChampionSet], adapters: Adapters
) -> AsyncIterator[tuple[RunningApp, ChampionSet]]:
    settings, _client, champion = registry
    adapters.features.items.update(_online_items())
    async with running_app(settings, adapters) as api:
        await _wait_for_set(api, champion.label)
        yield api, champion


def _recent(*items: str, count: int | None = None) -> RecentItems:
    times = tuple(BASE_TIME + 10_000_000 - n * 1000 for n in range(len(items)))
    return RecentItems(items, times, interaction_count=count, last_event_time=max(times))


async def test_known_user_is_served_by_the_champion_set(
    served: tuple[RunningApp, ChampionSet],
) -> None:
    api, champion = served
    api.adapters.features.users["u1"] = _recent("a", "c", count=12)
    response = await api.client.get("/recommend", params={"user_id": "u1", "k": 3})
    assert response.status_code == 200
    body = response.json()
    assert body["model_version"] == champion.label
    items = [item["item_id"] for item in body["items"]]
    assert len(items) == 3 and set(items) <= set(ITEMS)
    assert not {"a", "c"} & set(items), "seen items are never recommended"
    assert [item["rank"] for item in body["items"]] == [1, 2, 3]
    # The reason names the recent item DIN attended to most, by its title.
    assert {item["reason"] for item in body["items"]} <= {
        "because you interacted with Alien",
        "because you interacted with Casablanca",
    }
    await api.services.served_log.drain()
    served_event = api.adapters.sink.events[-1]
    assert isinstance(served_event, RecommendationServed)
    assert served_event.model_version == champion.label
    # DIN ranked them: each served item carries DIN's logit, which the monitor compares.
    logits = [item.din_score for item in served_event.items]
    assert all(isinstance(x, float) for x in logits), logits
    assert all(isinstance(item.get("din_score"), float) for item in body["items"])


async def test_a_new_user_gets_recall_from_recent_items(
    served: tuple[RunningApp, ChampionSet],
) -> None:
    api, champion = served
    # Not in the set's vocabulary: no trained vector, recall from the recent items alone.
    for user, recent, group in (("newcomer-1", "a", "a"), ("newcomer-2", "c", "c")):
        api.adapters.features.users[user] = _recent(recent, "not-in-vocab")
        body = (await api.client.get("/recommend", params={"user_id": user, "k": 3})).json()
        assert body["model_version"] == champion.label, "recall by LightGCN, no fallback"
        items = {item["item_id"] for item in body["items"]}
        assert set(GROUPS[group]) - {recent} <= items, f"{user}: {items}"
        assert recent not in items


async def test_a_user_with_no_history_gets_the_popularity_fallback(
    served: tuple[RunningApp, ChampionSet],
) -> None:
    api, champion = served
    # The set loaded before the API's first item refresh ranks by the log's counts and is
    # swapped once the store's rows arrive: both calls below must see the same set.
    await _wait_for_items(api, len(ITEMS))
    body = (await api.client.get("/recommend", params={"user_id": "stranger", "k": 3})).json()
    assert body["model_version"] == champion.label + "+recall:popularity"
    assert len(body["items"]) == 3
    assert {item["reason"] for item in body["items"]} == {"popular right now"}
    metrics = (await api.client.get("/metrics")).text
    assert 'streamrec_api_stage_fallbacks_total{source="popularity",stage="recall"} 1.0' in metrics
    # Asked again, the list is kept (nothing changed), and its fallback still counted.
    again = (await api.client.get("/recommend", params={"user_id": "stranger", "k": 3})).json()
    assert again["items"] == body["items"]
    metrics = (await api.client.get("/metrics")).text
    assert 'streamrec_api_stage_fallbacks_total{source="popularity",stage="recall"} 2.0' in metrics


def _memo_count(metrics: str, outcome: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics)
        if family.name == "streamrec_api_answer_memo"
        for sample in family.samples
        if sample.name.endswith("_total")
        and sample.labels == {"source": "cascade", "outcome": outcome}
    )


async def test_a_list_is_kept_only_while_the_user_row_and_the_items_are_unchanged(
    served: tuple[RunningApp, ChampionSet],
) -> None:
    api, _champion = served

    async def listed() -> tuple[list[str], str]:
        response = await api.client.get("/recommend", params={"user_id": "u7", "k": 3})
        assert response.status_code == 200
        body = response.json()
        return [item["item_id"] for item in body["items"]], body["request_id"]

    api.adapters.features.users["u7"] = _recent("a", count=3)
    await _wait_for_items(api, len(ITEMS))
    first, first_id = await listed()
    hits = _memo_count((await api.client.get("/metrics")).text, "hit")
    again, again_id = await listed()
    metrics = (await api.client.get("/metrics")).text
    assert again == first and again_id != first_id, "the same list, served as a new request"
    assert _memo_count(metrics, "hit") == hits + 1
    misses = _memo_count(metrics, "miss")

    # The user's next folded event changes their row: computed afresh, never the old list.
    api.adapters.features.users["u7"] = _recent(first[0], "a", count=4)
    fresh, _ = await listed()
    metrics = (await api.client.get("/metrics")).text
    assert _memo_count(metrics, "miss") == misses + 1
    assert first[0] not in fresh, "the item just interacted with is not served again"

    # An item row that changed makes a new served set (the next item refresh): a miss.
    serving = api.services.champion.current
    api.adapters.features.items["b"] = ItemStats(
        interaction_count=99, last_event_time=BASE_TIME + 99_000, trend_score=99.0
    )

    async def swapped() -> None:
        while api.services.champion.current is serving:
            await asyncio.sleep(0.02)

    await asyncio.wait_for(swapped(), LOAD_SECONDS)
    await listed()
    metrics = (await api.client.get("/metrics")).text
    assert _memo_count(metrics, "miss") == misses + 2
    # Every one of them reached the served log, hit or not.
    await api.services.served_log.drain()
    served_ids = {
        e.request_id
        for e in api.adapters.sink.events
        if isinstance(e, RecommendationServed) and e.user_id == "u7"
    }
    assert {first_id, again_id} <= served_ids and len(served_ids) == 4


async def test_across_an_item_refresh_a_list_is_kept_for_the_max_item_age_not_past_an_event(
    registry: tuple[Settings, MlflowClient, ChampionSet], adapters: Adapters
) -> None:
    settings, _client, champion = registry
    adapters.features.items.update(_online_items())
    adapters.features.users["u8"] = _recent("a", count=3)
    lasting = settings.model_copy(update={"api_answer_max_item_age_seconds": 60.0})
    async with running_app(lasting, adapters) as api:
        await _wait_for_set(api, champion.label)
        await _wait_for_items(api, len(ITEMS))

        async def listed() -> list[str]:
            response = await api.client.get("/recommend", params={"user_id": "u8", "k": 3})
            assert response.status_code == 200
            return [item["item_id"] for item in response.json()["items"]]

        first = await listed()
        misses = _memo_count((await api.client.get("/metrics")).text, "miss")
        serving = api.services.champion.current
        adapters.features.items["b"] = ItemStats(
            interaction_count=99, last_event_time=BASE_TIME + 99_000, trend_score=99.0
        )

        async def swapped() -> None:
            while api.services.champion.current is serving:
                await asyncio.sleep(0.02)

        await asyncio.wait_for(swapped(), LOAD_SECONDS)
        # New item features, the same user row: the list kept, not computed again.
        assert await listed() == first
        metrics = (await api.client.get("/metrics")).text
        assert _memo_count(metrics, "miss") == misses
        # The user's own event is never behind: computed afresh at once.
        adapters.features.users["u8"] = _recent(first[0], "a", count=4)
        assert first[0] not in await listed()
        metrics = (await api.client.get("/metrics")).text
        assert _memo_count(metrics, "miss") == misses + 1


async def test_past_the_limit_waiting_for_inference_a_computed_list_is_refused_at_once(
    registry: tuple[Settings, MlflowClient, ChampionSet],
    adapters: Adapters,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings, _client, champion = registry
    adapters.features.items.update(_online_items())
    for user, item in (("kept", "a"), ("w1", "c"), ("w2", "d")):
        adapters.features.users[user] = _recent(item)
    gate = threading.Event()
    gate.set()
    serve = api_service.serve

    def held(*args: Any) -> Any:
        assert gate.wait(30), "the test's gate was never opened"
        return serve(*args)

    monkeypatch.setattr(api_service, "serve", held)
    limited = settings.model_copy(update={"api_max_in_progress": 1})
    async with running_app(limited, adapters) as api:
        await _wait_for_set(api, champion.label)
        await _wait_for_items(api, len(ITEMS))
        get = api.client.get
        kept = (await get("/recommend", params={"user_id": "kept", "k": 3})).json()
        gate.clear()  # inference now waits
        first = asyncio.create_task(get("/recommend", params={"user_id": "w1", "k": 3}))
        while api.services.recommendations._inferring < 1:
            await asyncio.sleep(0.01)
        # A list to compute, answered at once rather than queued behind the one in progress.
        refused = await asyncio.wait_for(get("/recommend", params={"user_id": "w2"}), 5)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert "1 recommendation requests are waiting for inference" in refused.json()["detail"]
        # A kept list needs no inference: served meanwhile, the same list.
        again = await asyncio.wait_for(get("/recommend", params={"user_id": "kept", "k": 3}), 5)
        assert again.status_code == 200 and again.json()["items"] == kept["items"]
        metrics = (await get("/metrics")).text
        assert "streamrec_api_recommend_overloaded_total 1.0" in metrics
        gate.set()
        assert (await first).status_code == 200
        assert (await get("/recommend", params={"user_id": "w2"})).status_code == 200


async def test_readiness_and_metrics_name_the_set(served: tuple[RunningApp, ChampionSet]) -> None:
    api, champion = served
    body = (await api.client.get("/readyz")).json()
    assert body["checks"]["models"] == {"ok": True, "detail": champion.label}
    metrics = (await api.client.get("/metrics")).text
    assert f'model_version="{champion.label}"' in metrics
    assert 'streamrec_api_model_loads_total{outcome="loaded"} 1.0' in metrics


async def test_without_a_champion_the_baseline_serves(tmp_path: Path, adapters: Adapters) -> None:
    settings = _settings(tmp_path)
    write_log(settings.data_dir, TINY_SEQUENCES, titles=TINY_TITLES)
    async with running_app(settings, adapters) as api:
        await asyncio.wait_for(api.services.champion.checked.wait(), LOAD_SECONDS)
        api.adapters.features.users["u1"] = _recent("a")
        body = (await api.client.get("/recommend", params={"user_id": "u1", "k": 3})).json()
        assert body["model_version"] == MODEL_VERSION
        ready = (await api.client.get("/readyz")).json()
        assert ready["checks"]["models"] == {"ok": True, "detail": NO_CHAMPION}


async def test_a_stage_that_does_not_load_falls_back(tmp_path: Path, adapters: Adapters) -> None:
    settings = _settings(tmp_path)
    write_log(settings.data_dir, TINY_SEQUENCES, titles=TINY_TITLES)
    champion = register_set(open_registry(settings), TinySet(seed=3, break_stage="din"))
    async with running_app(settings, adapters) as api:
        await _wait_for_set(api, champion.label)
        api.adapters.features.users["u1"] = _recent("a")
        body = (await api.client.get("/recommend", params={"user_id": "u1", "k": 3})).json()
        # Without DIN the recall order stands, and RankNet (trained on DIN scores) sits out.
        assert body["model_version"] == champion.label + "+rank:recall+rerank:rank_order"
        assert {item["item_id"] for item in body["items"][:2]} == {"b", "x"}
        ready = (await api.client.get("/readyz")).json()
        assert "falling back for din" in ready["checks"]["models"]["detail"]


async def test_the_api_switches_when_the_alias_moves_without_failing_a_request(
    tmp_path: Path, adapters: Adapters
) -> None:
    settings = _settings(tmp_path)
    write_log(settings.data_dir, TINY_SEQUENCES, titles=TINY_TITLES)
    client = open_registry(settings)
    first = register_set(client, TinySet(seed=1))
    second = register_set(client, TinySet(seed=2), promote=False)
    adapters.features.items.update(_online_items())
    adapters.features.users["u2"] = _recent("c", "p")
    async with running_app(settings, adapters) as api:
        await _wait_for_set(api, first.label)
        versions: list[str] = []
        statuses: list[int] = []
        stop = asyncio.Event()

        async def fire() -> None:
            while not stop.is_set():
                response = await api.client.get("/recommend", params={"user_id": "u2", "k": 3})
                statuses.append(response.status_code)
                if response.status_code == 200:
                    versions.append(response.json()["model_version"])
                await asyncio.sleep(0)

        async def answered(count: int) -> None:
            # Counts, not sleeps: a busy machine answers fewer requests per second.
            while len(versions) < count:
                await asyncio.sleep(0.01)

        firing = [asyncio.create_task(fire()) for _ in range(4)]
        await asyncio.wait_for(answered(10), timeout=60)
        await asyncio.to_thread(promote_set, client, second.versions)
        await _wait_for_set(api, second.label)
        swapped_at = len(versions)
        await asyncio.wait_for(answered(swapped_at + len(firing) + 11), timeout=60)
        stop.set()
        await asyncio.gather(*firing)

    assert statuses and set(statuses) == {200}, "no request failed during the switch"
    assert versions[:10] == [first.label] * 10
    # Requests in flight at the swap (at most one per firing task) finish on the old set;
    # every later one is served by the new set.
    after = versions[swapped_at + len(firing) :]
    assert len(after) > 10 and set(after) == {second.label}


async def test_a_registry_created_while_the_api_runs_is_picked_up(
    tmp_path: Path, adapters: Adapters
) -> None:
    settings = _settings(tmp_path)
    write_log(settings.data_dir, TINY_SEQUENCES, titles=TINY_TITLES)
    async with running_app(settings, adapters) as api:
        await asyncio.wait_for(api.services.champion.checked.wait(), LOAD_SECONDS)
        # Training creates the registry (MLflow's migrations run) while the API polls it.
        champion = await asyncio.to_thread(
            lambda: register_set(open_registry(settings), TinySet(seed=6))
        )
        await _wait_for_set(api, champion.label)
        body = (await api.client.get("/recommend", params={"user_id": "u1", "k": 3})).json()
        assert body["model_version"].startswith(champion.label)


async def test_a_champion_that_failed_to_load_is_tried_again(
    tmp_path: Path, adapters: Adapters, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(tmp_path)
    write_log(settings.data_dir, TINY_SEQUENCES, titles=TINY_TITLES)
    champion = register_set(open_registry(settings), TinySet(seed=7))
    download = ChampionWatcher._download
    attempts: list[str] = []

    def flaky(self: ChampionWatcher, wanted: ChampionSet) -> Any:
        attempts.append(wanted.label)
        if len(attempts) == 1:  # the artifact store is briefly away
            raise SetLoadError("artifact store unreachable")
        return download(self, wanted)

    monkeypatch.setattr(ChampionWatcher, "_download", flaky)
    async with running_app(settings, adapters) as api:
        await _wait_for_set(api, champion.label)
        assert attempts == [champion.label, champion.label]
        ready = (await api.client.get("/readyz")).json()
        assert ready["checks"]["models"]["detail"] == champion.label
