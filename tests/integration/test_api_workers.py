"""`streamrec serve --workers 2` on the real Kafka and Redis, with the worker: two processes
answer on one port, and whatever process a request reaches, the service looks like one
process: a scrape shows every request, a stream on either process gets its update, the one
replay is controlled from either, and SIGTERM stops them all."""

from __future__ import annotations

import os
import secrets
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from api.metrics import PROCESS_HEADER
from api.sse_client import SseStream
from streamrec.infra.processes import run_streamrec, streamrec_process
from streamrec.settings import Settings
from tests.support import api_ready, paced_speed, wait_until

USERS = 200
REQUESTS = 60


def _recommend_count(text: str) -> float:
    """GET /recommend answered 200, as the scrape reports it."""
    for family in text_string_to_metric_families(text):
        if family.name == "streamrec_api_request_seconds":
            return sum(
                s.value
                for s in family.samples
                if s.name.endswith("_count")
                and s.labels["route"] == "/recommend"
                and s.labels["status"] == "200"
            )
    return 0.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.timeout(900)
def test_two_api_processes_serve_one_port_as_one_service(
    live_settings: Settings, tmp_path: Path
) -> None:
    admin = {"X-API-Key": secrets.token_hex(16)}
    settings = live_settings.model_copy(update={"api_key": admin["X-API-Key"]})
    base = f"http://127.0.0.1:{settings.api_port}"
    run_streamrec(
        settings, "data", "prepare", f"synthetic:users={USERS},items=80,events=3000,seed=5"
    )
    run_streamrec(settings, "features", "apply")
    logs = {name: tmp_path / f"{name}.log" for name in ("worker", "api")}
    with ExitStack() as stack:
        stack.enter_context(streamrec_process(settings, "worker", log=logs["worker"]))
        api = stack.enter_context(
            streamrec_process(settings, "serve", "--workers", "2", log=logs["api"])
        )
        run_streamrec(settings, "replay", "synthetic", "--speed", "max")

        wait_until(
            api_ready(base), 300, "the API's /readyz", interval=1.0, proc=api, log=logs["api"]
        )

        # Both processes answer GET /recommend: a fresh connection per request, several at
        # once, and each answer names its process.
        def recommend(i: int) -> str:
            response = httpx.get(
                f"{base}/recommend", params={"user_id": f"u{i % USERS}", "k": 10}, timeout=30
            )
            assert response.status_code == 200, response.text
            return response.headers[PROCESS_HEADER]

        with ThreadPoolExecutor(8) as pool:
            answered = list(pool.map(recommend, range(REQUESTS)))
        pids = {int(pid) for pid in answered}
        assert len(pids) == 2, f"one process answered every request: {set(answered)}"
        assert api.pid not in pids  # the supervisor serves nothing itself

        # Every scrape counts every request, whichever process answers it; both answer.
        scraped_by: set[int] = set()
        for _ in range(60):
            scrape = httpx.get(f"{base}/metrics", timeout=30)
            assert _recommend_count(scrape.text) == REQUESTS
            scraped_by.add(int(scrape.headers[PROCESS_HEADER]))
            if scraped_by == pids:
                break
        assert scraped_by == pids

        # A stream on each process gets a new list after its user's event.
        streams = stack.enter_context(ExitStack())
        by_process: dict[int, tuple[str, SseStream, str]] = {}
        for i in range(40):
            if len(by_process) == 2:
                break
            user = f"u{i}"
            stream = streams.enter_context(
                SseStream(f"{base}/recommend/stream", {"user_id": user, "k": 10})
            )
            first = stream.next(timeout=30)
            assert first.data["items"], first.data
            assert stream.headers is not None
            pid = int(stream.headers[PROCESS_HEADER])
            by_process.setdefault(pid, (user, stream, first.data["items"][0]["item_id"]))
        assert set(by_process) == pids
        for user, stream, item in by_process.values():
            posted = httpx.post(
                f"{base}/events",
                json={"user_id": user, "item_id": item, "action": "click"},
                timeout=30,
            )
            assert posted.status_code == 202, posted.text

            def clicked_item_left(stream: SseStream = stream, item: str = item) -> bool:
                update = stream.next(timeout=30)
                return item not in {entry["item_id"] for entry in update.data["items"]}

            wait_until(clicked_item_left, 60, f"{user}'s stream to drop the clicked {item}")
        streams.close()

        # One replay for the service: started on one process, seen and controlled on both.
        speed = paced_speed(settings, "synthetic", 600)
        started = httpx.post(
            f"{base}/admin/replay",
            json={"source": "synthetic", "speed": float(speed)},
            headers=admin,
            timeout=30,
        )
        assert started.status_code == 202, started.text
        run_id = started.json()["run_id"]
        owner = int(started.headers[PROCESS_HEADER])
        controlled_by: dict[str, set[int]] = {"pause": set(), "resume": set()}
        for _ in range(40):
            for action, state in (("pause", "paused"), ("resume", "running")):
                done = httpx.post(f"{base}/admin/replay/{action}", headers=admin, timeout=30)
                assert done.status_code == 200, done.text
                assert (done.json()["run_id"], done.json()["state"]) == (run_id, state)
                controlled_by[action].add(int(done.headers[PROCESS_HEADER]))
                status = httpx.get(f"{base}/admin/replay", headers=admin, timeout=30)
                assert (status.json()["run_id"], status.json()["state"]) == (run_id, state)
            if all(by == pids for by in controlled_by.values()):
                break
        assert controlled_by == {"pause": pids, "resume": pids}, f"owner {owner}"
        conflict = httpx.post(
            f"{base}/admin/replay", json={"source": "synthetic"}, headers=admin, timeout=30
        )
        assert conflict.status_code == 409 and run_id in conflict.text
        stopped = httpx.post(f"{base}/admin/replay/stop", headers=admin, timeout=60)
        assert stopped.status_code == 200 and stopped.json()["state"] == "stopped"
        for _ in range(10):
            status = httpx.get(f"{base}/admin/replay", headers=admin, timeout=30)
            assert (status.json()["run_id"], status.json()["state"]) == (run_id, "stopped")

        # SIGTERM to `streamrec serve` stops every process it started, and itself.
        api.send_signal(signal.SIGTERM)
        assert api.wait(60) == 0
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(pid) for pid in pids)
        log = logs["api"].read_text()
        assert log.count("Application shutdown complete") == 2, log[-3000:]
