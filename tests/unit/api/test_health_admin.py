"""/healthz, /readyz, /metrics and the admin API key."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client import values as prometheus_values
from pydantic import SecretStr

from api import state as api_state
from api.adapters.memory_changes import InMemoryChangeFeed
from api.catalogue import LogCatalogue, read_catalogue
from api.metrics import ApiMetrics
from api.ports import PortUnavailable
from api.routes import health
from tests.unit.api.helpers import RunningApp, running_app

API_KEY = "0123456789abcdef-test-key"


async def test_healthz(api: RunningApp) -> None:
    response = await api.client.get("/healthz")
    assert response.status_code == 200
    # pid: which of several API processes answered (`streamrec serve --workers`).
    assert response.json() == {"status": "ok", "pid": os.getpid()}
    assert response.headers["x-streamrec-pid"] == str(os.getpid())


async def test_ready_when_every_check_passes(api: RunningApp) -> None:
    response = await api.client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["failed"] == []
    assert set(body["checks"]) == {
        "broker",
        "online_store",
        "features",
        "change_feed",
        "recommender",
        "models",
    }
    assert "7 items" in body["checks"]["recommender"]["detail"]


async def _details(app: RunningApp) -> dict[str, str]:
    """Each check's detail as /admin/readiness (behind the key) gives it."""
    response = await app.client.get("/admin/readiness", headers={"X-API-Key": API_KEY})
    return {name: check["detail"] for name, check in response.json()["checks"].items()}


def _with_key(settings):  # type: ignore[no-untyped-def]
    return settings.model_copy(update={"api_key": SecretStr(API_KEY)})


async def test_broker_and_store_failures_are_named(settings, adapters) -> None:  # type: ignore[no-untyped-def]
    adapters.sink.failure = "kafka broker unreachable at /srv/secret/path"
    adapters.features.failure = "redis refused the connection"
    async with running_app(_with_key(settings), adapters) as app:
        response = await app.client.get("/readyz")
        details = await _details(app)
    assert response.status_code == 503
    body = response.json()
    assert body["failed"] == ["broker", "online_store"]
    # unauthenticated: what failed, in fixed words; no client error text, no path
    assert body["checks"]["broker"]["detail"] == health.PUBLIC_FAILURE["broker"]
    assert body["checks"]["online_store"]["detail"] == health.PUBLIC_FAILURE["online_store"]
    assert "/srv" not in response.text and "refused" not in response.text
    assert details["broker"] == "kafka broker unreachable at /srv/secret/path"
    assert details["online_store"] == "redis refused the connection"
    assert body["checks"]["recommender"]["ok"] is True


async def test_readyz_reveals_no_path(api: RunningApp, settings) -> None:  # type: ignore[no-untyped-def]
    response = await api.client.get("/readyz")
    assert str(settings.data_dir) not in response.text


class BrokenChangeFeed(InMemoryChangeFeed):
    async def ping(self) -> None:
        raise PortUnavailable("redis pub/sub not subscribed")


class HangingChangeFeed(InMemoryChangeFeed):
    async def ping(self) -> None:
        await asyncio.sleep(60)


async def test_change_feed_failure_is_named(settings, adapters) -> None:  # type: ignore[no-untyped-def]
    adapters.changes = BrokenChangeFeed()
    async with running_app(_with_key(settings), adapters) as app:
        body = (await app.client.get("/readyz")).json()
        details = await _details(app)
    assert body["failed"] == ["change_feed"]
    assert details["change_feed"] == "redis pub/sub not subscribed"


async def test_a_check_that_hangs_fails_on_time(
    settings,
    adapters,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    monkeypatch.setattr(health, "CHECK_TIMEOUT_SECONDS", 0.1)
    adapters.changes = HangingChangeFeed()
    async with running_app(_with_key(settings), adapters) as app:
        response = await asyncio.wait_for(app.client.get("/readyz"), 5)
        details = await _details(app)
    assert response.status_code == 503
    assert details["change_feed"] == "no answer within 0.1s"


async def test_not_ready_until_the_event_log_is_read(
    start_app,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    release = threading.Event()

    def slow_catalogue(log_dir: Path) -> LogCatalogue:
        release.wait(10)
        return read_catalogue(log_dir)

    monkeypatch.setattr(api_state, "read_catalogue", slow_catalogue)
    try:
        async with start_app(wait_for_index=False) as app:
            response = await app.client.get("/readyz")
            assert response.status_code == 503
            assert response.json()["failed"] == ["recommender"]
            assert (
                response.json()["checks"]["recommender"]["detail"]
                == (health.PUBLIC_FAILURE["recommender"])
            )
            release.set()
            await asyncio.wait_for(app.services.state.index_built.wait(), 10)
            assert (await app.client.get("/readyz")).status_code == 200
    finally:
        release.set()


async def test_metrics_are_prometheus_text_per_route_template(api: RunningApp) -> None:
    await api.client.get("/recommend", params={"user_id": "u1"})
    await api.client.get("/no/such/page/12345")
    response = await api.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert (
        'streamrec_api_request_seconds_count{method="GET",route="/recommend",status="200"} 1.0'
        in text
    )
    assert 'route="<unmatched>",status="404"' in text
    assert "/no/such/page" not in text
    for name in (
        "streamrec_api_events_accepted_total",
        "streamrec_api_sse_clients",
        "streamrec_api_feature_read_seconds",
        'streamrec_api_recommendations_total{channel="http",kind="cold_start"} 1.0',
    ):
        assert name in text


def test_each_app_has_its_own_registry() -> None:
    first, second = ApiMetrics(), ApiMetrics()
    first.served_write_failures.inc()
    assert second.served_write_failures._value.get() == 0  # no shared or clashing series


def test_apps_share_no_values_when_prometheus_is_in_multiprocess_mode(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # What importing feast before prometheus_client does to the whole process.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(prometheus_values, "ValueClass", prometheus_values.MultiProcessValue())
    first = ApiMetrics()
    first.served_write_failures.inc()
    first.events_accepted.labels("view").inc()
    first.request_seconds.labels("GET", "/recommend", "200").observe(0.01)
    first.sse_clients.inc()
    second = ApiMetrics()
    second.events_accepted.labels("view").inc()
    text = generate_latest(second.registry).decode()
    assert "streamrec_api_served_event_failures_total 0.0" in text
    assert 'streamrec_api_events_accepted_total{action="view"} 1.0' in text
    assert "streamrec_api_sse_clients 0.0" in text
    assert "streamrec_api_request_seconds_count" not in text
    second.request_seconds.labels("GET", "/recommend", "200").observe(0.01)
    assert (
        'streamrec_api_request_seconds_count{method="GET",route="/recommend",status="200"} 1.0'
        in generate_latest(second.registry).decode()
    )
    assert not list(tmp_path.iterdir())  # nothing went to the multiprocess files


async def test_admin_is_closed_without_a_configured_key(api: RunningApp) -> None:
    response = await api.client.get("/admin/status", headers={"X-API-Key": API_KEY})
    assert response.status_code == 403
    assert response.json()["detail"] == "admin API disabled: set STREAMREC_API_KEY"


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"X-API-Key": "wrong-key-wrong-key"}, 403), ({"X-API-Key": API_KEY}, 200)],
)
async def test_admin_needs_the_key(
    start_app,
    settings,
    headers: dict[str, str],
    status: int,  # type: ignore[no-untyped-def]
) -> None:
    keyed = settings.model_copy(update={"api_key": SecretStr(API_KEY)})
    async with start_app(keyed) as app:
        response = await app.client.get("/admin/status", headers=headers)
    assert response.status_code == status
    if status == 200:
        assert response.json()["model_version"] == "baseline-item-knn-v1"
