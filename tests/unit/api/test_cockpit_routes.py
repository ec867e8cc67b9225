"""The cockpit's data routes, the page's static files, the offline docs, and the
optional title, category and stage of each item in /recommend answers."""

from __future__ import annotations

import math

import pandas as pd
from prometheus_client import CollectorRegistry, Histogram

from api.cockpit import final_stage, interest_shares, trending
from api.log_health import freshness_p95
from api.ports import ItemStats, RecentItems
from api.serving.baseline import MODEL_VERSION
from streamrec.settings import Settings
from streams.folding import TREND_HALF_LIFE_MS
from tests.unit.api.helpers import (
    BASE_TIME,
    TINY_SEQUENCES,
    Adapters,
    running_app,
    write_log,
)

CATEGORIES = {"a": ["Sci-Fi", "Horror"], "b": ["Sci-Fi"], "c": ["Drama"], "p": ["Comedy"]}


def _write_catalogue(settings: Settings) -> None:
    folder = write_log(settings.data_dir, TINY_SEQUENCES)
    pd.DataFrame(
        {
            "item_id": list(CATEGORIES),
            "title": ["Alien", "Blade Runner", "Casablanca", "Playtime"],
            "categories": list(CATEGORIES.values()),
        }
    ).to_parquet(folder / "items.parquet")


async def test_recommend_items_carry_title_category_and_stage(
    settings: Settings, adapters: Adapters
) -> None:
    _write_catalogue(settings)
    async with running_app(settings, adapters) as api:
        body = (await api.client.get("/recommend", params={"user_id": "new", "k": 5})).json()
    by_id = {item["item_id"]: item for item in body["items"]}
    assert by_id["p"]["title"] == "Playtime" and by_id["p"]["category"] == "Comedy"
    assert all(item["stage"] == "item-knn" for item in body["items"])
    unknown = [item for item_id, item in by_id.items() if item_id not in CATEGORIES]
    assert all(item["title"] is None and item["category"] is None for item in unknown)


async def test_user_logs_search_and_interests(settings: Settings, adapters: Adapters) -> None:
    _write_catalogue(settings)
    adapters.features.users["u1"] = RecentItems(
        items=("a", "b", "zz"), times=(BASE_TIME + 2, BASE_TIME + 1, BASE_TIME)
    )
    async with running_app(settings, adapters) as api:
        logs = (await api.client.get("/cockpit/logs")).json()
        assert logs == [
            {"source": "tiny", "first_ms": BASE_TIME, "last_ms": BASE_TIME + 2000, "events": 16}
        ]
        users = (await api.client.get("/cockpit/users", params={"q": "u"})).json()
        assert users["total"] == len(TINY_SEQUENCES)
        assert users["users"][:2] == ["u1", "u2"]  # most active first
        picked = (await api.client.get("/cockpit/users/random")).json()["user_id"]
        assert picked in TINY_SEQUENCES

        user = (await api.client.get("/cockpit/user", params={"user_id": "u1"})).json()
        assert user["known"] is True
        assert [r["title"] for r in user["recent"]] == ["Alien", "Blade Runner", None]
        assert user["recent"][0]["categories"] == ["Sci-Fi", "Horror"]
        assert user["interests"] == {"Sci-Fi": 0.5, "Horror": 0.1667, "other": 0.3333}
        stranger = (await api.client.get("/cockpit/user", params={"user_id": "nobody"})).json()
        assert stranger["known"] is False and stranger["interests"] == {}


async def test_page_assets_and_offline_docs(settings: Settings, adapters: Adapters) -> None:
    async with running_app(settings, adapters, wait_for_index=False) as api:
        page = await api.client.get("/ui")
        assert page.status_code == 200 and "streamrec cockpit" in page.text
        assert (await api.client.get("/ui/static/cockpit.js")).status_code == 200
        docs = await api.client.get("/docs")
        assert "/docs/assets/swagger-ui-bundle.js" in docs.text
        assert "cdn" not in docs.text.lower()
        bundle = await api.client.get("/docs/assets/swagger-ui-bundle.js")
        assert bundle.status_code == 200 and len(bundle.content) > 100_000
        redoc = await api.client.get("/redoc")
        assert "/docs/assets/redoc.standalone.js" in redoc.text
        assert "fonts.googleapis" not in redoc.text


def test_final_stage_names_what_ordered_the_list() -> None:
    assert final_stage(MODEL_VERSION) == "item-knn"
    label = "cascade-lightgcn.v1-din.v1-ranknet.v1"
    assert final_stage(label) == "ranknet"
    assert final_stage(label + "+recall:cold_start") == "ranknet"
    assert final_stage(label + "+rerank:rank_order") == "din"
    assert final_stage(label + "+rank:recall_order+rerank:rank_order") == "lightgcn"


def test_interest_shares_split_multi_category_items() -> None:
    recent = RecentItems(items=("a", "c"), times=(2, 1))
    shares = interest_shares(recent, {"a": ("x", "y"), "c": ("x",)})
    assert shares == {"x": 0.75, "y": 0.25}
    assert interest_shares(None, {}) == {}


def test_trending_compares_items_at_one_instant() -> None:
    now = BASE_TIME + TREND_HALF_LIFE_MS
    stats = {
        # 10 a half-life ago is 5 now; 6 now beats it though its raw score is lower.
        "old": ItemStats(interaction_count=10, trend_score=10.0, last_event_time=BASE_TIME),
        "fresh": ItemStats(interaction_count=6, trend_score=6.0, last_event_time=now),
        "never": ItemStats(),
    }
    top = trending(stats, 5)
    assert [t.item_id for t in top] == ["fresh", "old"]
    assert math.isclose(top[1].score, 5.0)


def test_freshness_p95_reads_a_histogram_when_there_is_one() -> None:
    registry = CollectorRegistry()
    assert freshness_p95(registry) is None
    histogram = Histogram(
        "streamrec_test_freshness_seconds", "x", buckets=(0.1, 0.5, 1.0), registry=registry
    )
    for _ in range(90):
        histogram.observe(0.05)
    for _ in range(10):
        histogram.observe(0.7)
    assert freshness_p95(registry) == 1.0
