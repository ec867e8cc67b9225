"""The monitoring loop on the real stack: the Prometheus that `streamrec services up` runs
scrapes a worker, an API, an archiver, a Spark job, the drift job and the monitor started
as `streamrec` processes, and every panel of the generated dashboards returns series after a
short replay."""

from __future__ import annotations

import secrets
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest

from api.sse_client import SseStream
from streamrec.infra.dashboards import overview_panels
from streamrec.infra.processes import run_streamrec, streamrec_process
from streamrec.infra.prometheus import PrometheusQueryError, PrometheusServer
from streamrec.paths import dataset_events
from streamrec.settings import Settings
from tests.support import api_ready, scraped, services_prometheus, wait_until

JOBS = (
    "streamrec-api",
    "streamrec-worker",
    "streamrec-spark",
    "streamrec-archiver",
    "streamrec-drift",
    "streamrec-monitor",
)


def _traffic(base: str, user: str, admin_key: str) -> None:
    """Requests of every kind the panels draw: lists, events, a stream update, a 422, and
    lists of an experiment with a click on each."""
    with httpx.Client(base_url=base, timeout=30) as http:
        for i in range(20):
            assert http.get("/recommend", params={"user_id": f"u{i}", "k": 10}).status_code == 200
        experiment = {
            "name": "panel",
            "mode": "ab",
            "variants": [
                {"name": "popular", "strategy": "popularity", "share": 0.5},
                {"name": "random", "strategy": "random", "share": 0.5},
            ],
        }
        made = http.post("/admin/experiments", json=experiment, headers={"X-API-Key": admin_key})
        assert made.status_code == 201, made.text
        for i in range(10):
            body = http.get("/recommend", params={"user_id": f"x{i}", "k": 10}).json()
            assert body["experiment"] == "panel", body
            first = body["items"][0]
            click = {
                "user_id": f"x{i}",
                "item_id": first["item_id"],
                "action": "click",
                "request_id": body["request_id"],
                "rank": first["rank"],
            }
            assert http.post("/events", json=click).status_code == 202
        with SseStream(f"{base}/recommend/stream", {"user_id": user, "k": 10}) as stream:
            first = stream.next(timeout=15)
            item = first.data["items"][0]["item_id"]
            posted = http.post(
                "/events", json={"user_id": user, "item_id": item, "action": "click"}
            )
            assert posted.status_code == 202, posted.text
            stream.next(timeout=15)  # the update the notice caused
        assert http.post("/events", json={"user_id": user, "action": "steal"}).status_code == 422


def _missing_panels(prometheus: PrometheusServer) -> list[str]:
    """Panels with a query Prometheus refuses, or whose queries all return no series."""
    missing = []
    for panel in overview_panels():
        found = 0
        for query in panel.queries:
            try:
                found += len(prometheus.query(query.expr))
            except PrometheusQueryError as exc:
                missing.append(f"{panel.title}: {exc}")
                found = -1
                break
        if found == 0:
            missing.append(f"{panel.title}: no series")
    return missing


@pytest.mark.timeout(900)
def test_prometheus_scrapes_the_stack_and_every_panel_has_series(
    live_settings: Settings, tmp_path: Path
) -> None:
    admin_key = secrets.token_hex(16)
    settings = live_settings.model_copy(update={"api_key": admin_key})
    prometheus = services_prometheus(settings)
    base = f"http://127.0.0.1:{settings.api_port}"
    run_streamrec(settings, "data", "prepare", "synthetic:users=200,items=80,events=3000,seed=3")
    run_streamrec(settings, "features", "apply")
    names = ("worker", "api", "archiver", "spark", "drift", "monitor")
    logs = {name: tmp_path / f"{name}.log" for name in names}
    # The drift job's reference ends halfway through the synthetic log (epoch seconds).
    times = pq.read_table(dataset_events(settings.data_dir, "synthetic"), columns=["event_time"])
    cutoff = str(int(np.median(times.column(0).to_numpy())) // 1000)
    with ExitStack() as stack:
        stack.enter_context(scraped(prometheus, settings))
        procs = {
            "worker": stack.enter_context(
                streamrec_process(settings, "worker", log=logs["worker"])
            ),
            "api": stack.enter_context(streamrec_process(settings, "serve", log=logs["api"])),
            "archiver": stack.enter_context(
                streamrec_process(settings, "archive", log=logs["archiver"])
            ),
            "spark": stack.enter_context(streamrec_process(settings, "spark", log=logs["spark"])),
            "drift": stack.enter_context(
                streamrec_process(
                    settings,
                    "drift",
                    "--reference-until",
                    cutoff,
                    "--window-events",
                    "1000",
                    "--every",
                    "5",
                    log=logs["drift"],
                )
            ),
            # No set is trained here: the monitor scores the heuristic's lists online.
            "monitor": stack.enter_context(
                streamrec_process(
                    settings, "monitor", "--window-events", "200", log=logs["monitor"]
                )
            ),
        }
        run_streamrec(settings, "replay", "synthetic", "--speed", "max")

        wait_until(api_ready(base), 120, "the API to be ready", proc=procs["api"], log=logs["api"])

        # Every process of this stack answers its scrape, with the job the rules expect.
        def scrape_errors() -> dict[str, str]:
            ours = [
                t
                for t in prometheus.active_targets()
                if t["labels"].get("stack") == settings.topic_prefix
            ]
            errors = {t["labels"]["job"]: t["lastError"] or t["health"] for t in ours}
            return {job: errors.get(job, "no target") for job in JOBS if errors.get(job) != "up"}

        deadline = time.monotonic() + 180
        while (errors := scrape_errors()) and time.monotonic() < deadline:
            time.sleep(2)
        assert not errors, errors

        # `services status` of the running services, pointed at this stack's ports.
        status = run_streamrec(
            settings.model_copy(update={"state_dir": prometheus.settings.state_dir}),
            "services",
            "status",
        )
        for name in names:
            assert any(line.split()[:2] == [name, "up"] for line in status.splitlines()), status

        _traffic(base, "monitor-user", admin_key)
        # Spark's first batches come after its JVM starts; rates need two scrapes of them.
        deadline = time.monotonic() + 240
        missing = _missing_panels(prometheus)
        while missing and time.monotonic() < deadline:
            for name, proc in procs.items():
                assert proc.poll() is None, f"{name} exited:\n{logs[name].read_text()[-3000:]}"
            time.sleep(5)
            missing = _missing_panels(prometheus)
        assert not missing, "\n".join(missing)


def test_prometheus_loads_the_repository_rules(live_settings: Settings) -> None:
    prometheus = services_prometheus(live_settings)
    groups = httpx.get(f"{prometheus.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    names = {rule["name"] for group in groups for rule in group["rules"]}
    assert {"FreshnessAboveObjective", "ConsumerLagGrowing", "ApiErrorRatioHigh"} <= names
    assert "job:streamrec_consumer_lag_records:sum" in names
    unhealthy = [r for g in groups for r in g["rules"] if r["health"] == "err"]
    assert not unhealthy, unhealthy
