"""The cockpit's data routes, the page's static files, the offline docs, and the
optional title, category and stage of each item in /recommend answers."""

from __future__ import annotations

import pandas as pd
from prometheus_client import CollectorRegistry, Histogram

from api.cockpit import HOUR_MS, final_stage, hour_candidates, interest_shares, trending_hour
from api.log_health import histogram_p95
from api.ports import HourActivity, ItemStats, LongInterests, RecentItems
from api.serving.baseline import MODEL_VERSION
from streamrec.settings import Settings
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


def test_trending_counts_the_hour_before_now() -> None:
    now = BASE_TIME + 10 * HOUR_MS
    hours = {
        # ended now: all 12 count; ended half an hour ago: half of 30 overlaps now's hour
        "current": HourActivity(interactions_1h=12, end_1h=now),
        "half": HourActivity(interactions_1h=30, end_1h=now - HOUR_MS // 2),
        "gone": HourActivity(interactions_1h=99, end_1h=now - HOUR_MS),
        # a live event ahead of the stream's clock reads as now, and Spark's current window
        "ahead": HourActivity(
            interactions_1h=3, end_1h=now + 5 * HOUR_MS, spark_1h=4.0, spark_end_1h=now
        ),
        "stale_spark": HourActivity(
            interactions_1h=1, end_1h=now, spark_1h=8.0, spark_end_1h=now - 2 * HOUR_MS
        ),
    }
    stats = {"current": ItemStats(interaction_count=40, last_event_time=now)}
    top = trending_hour(hours, stats, now, 10)
    assert [(t.item_id, t.last_hour) for t in top] == [
        ("half", 15.0),
        ("current", 12.0),
        ("ahead", 3.0),
        ("stale_spark", 1.0),
    ]
    assert top[1].interactions == 40 and top[0].interactions == 0
    assert top[2].spark_1h == 4.0 and top[3].spark_1h is None
    assert [t.item_id for t in trending_hour(hours, stats, now, 1)] == ["half"]
    candidates = {
        "recent": ItemStats(last_event_time=now - HOUR_MS + 1),
        "old": ItemStats(last_event_time=now - HOUR_MS),
        "never": ItemStats(),
    }
    assert hour_candidates(candidates, now) == ["recent"]


async def test_trending_and_long_interests_come_from_the_store(
    settings: Settings, adapters: Adapters
) -> None:
    _write_catalogue(settings)
    now = BASE_TIME + 2000
    adapters.features.items = {
        item: ItemStats(interaction_count=5, last_event_time=now) for item in ("a", "b", "c")
    }
    adapters.features.hours = {
        "a": HourActivity(interactions_1h=2, end_1h=now),
        "c": HourActivity(interactions_1h=7, end_1h=now),
    }
    adapters.features.users["u1"] = RecentItems(items=("a",), times=(now,))
    adapters.features.interests["u1"] = LongInterests({"Drama": 0.75, "Sci-Fi": 0.25}, now)
    async with running_app(settings, adapters) as api:
        await api.services.state.refresh_items()
        top = (await api.client.get("/cockpit/trending", params={"k": 5})).json()
        assert [(t["item_id"], t["title"], t["last_hour"]) for t in top] == [
            ("c", "Casablanca", 7.0),
            ("a", "Alien", 2.0),
        ]
        user = (await api.client.get("/cockpit/user", params={"user_id": "u1"})).json()
        assert user["interests_long"] == {"Drama": 0.75, "Sci-Fi": 0.25}
        assert user["interests_long_window_end"] == now
        adapters.features.failure = "redis down"
        answer = await api.client.get("/cockpit/trending")
        assert answer.status_code == 503 and "redis down" in answer.text


def test_histogram_p95_reads_the_named_histogram() -> None:
    registry = CollectorRegistry()
    assert histogram_p95(registry, "streamrec_test_freshness_seconds") is None
    histogram = Histogram(
        "streamrec_test_freshness_seconds", "x", buckets=(0.1, 0.5, 1.0), registry=registry
    )
    Histogram("streamrec_other_seconds", "y", registry=registry).observe(100.0)
    for _ in range(90):
        histogram.observe(0.05)
    for _ in range(10):
        histogram.observe(0.7)
    assert histogram_p95(registry, "streamrec_test_freshness_seconds") == 1.0
