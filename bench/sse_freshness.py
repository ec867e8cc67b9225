"""Event-to-SSE freshness: from `POST /events` to the new list on `/recommend/stream`.

    .venv/bin/python bench/sse_freshness.py [--source movielens-100k] [--samples 30]
        [--background-rate 0]

Needs the services (`streamrec services up`) and a prepared log. Starts its own worker
and API on fresh topics, replays the log at max speed first (so features and popularity
are warm), then for each sample opens a stream for a fresh user, posts one event and
times: the POST itself (broker ack), the "user changed" notice on Redis, and the SSE
list. With --background-rate R a second replayer produces R events/s meanwhile.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import redis  # noqa: E402

from bench.stats import summary  # noqa: E402
from streamrec.processes import REPO_ROOT, settings_env, streamrec_process  # noqa: E402
from streamrec.settings import Settings, load_settings  # noqa: E402
from streamrec.sse_client import SseStream  # noqa: E402
from streams.events import Topics  # noqa: E402
from streams.lag import wait_until_caught_up  # noqa: E402
from streams.notify import user_changed_channel  # noqa: E402
from streams.topics import ensure_topics  # noqa: E402


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "streamrec.cli", *args],
        cwd=REPO_ROOT,
        env=settings_env(settings),
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise SystemExit(f"streamrec {' '.join(args)} failed:\n{result.stderr}")
    return result


def _wait_ready(http: httpx.Client, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if http.get("/readyz").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit("the API did not become ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="movielens-100k")
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument(
        "--background-rate",
        type=float,
        default=0.0,
        help="events/s replayed in the background while measuring (0: none)",
    )
    args = parser.parse_args()
    base = load_settings()
    with tempfile.TemporaryDirectory() as scratch:
        prefix = f"fresh{uuid.uuid4().hex[:8]}."
        settings = base.model_copy(
            update={
                "topic_prefix": prefix,
                "state_dir": Path(scratch) / "state",
                "api_port": base.api_port + 17,
                "worker_port": base.worker_port + 17,
            }
        )
        ensure_topics(settings.bootstrap_servers, Topics(prefix), settings.topic_partitions)
        _cli(settings, "features", "apply")
        _cli(settings, "replay", args.source, "--speed", "max")
        url = f"http://127.0.0.1:{settings.api_port}"
        logs = Path(scratch)
        with (
            streamrec_process(settings, "worker", log=logs / "worker.log"),
            streamrec_process(settings, "serve", log=logs / "api.log"),
            httpx.Client(base_url=url, timeout=30) as http,
        ):
            _wait_ready(http)
            items = [
                i["item_id"]
                for i in http.get("/recommend", params={"user_id": "warm", "k": 50}).json()["items"]
            ]
            background = None
            if args.background_rate > 0:
                # Replaying at speed X gives ~X times the log's own rate; rebase so events
                # look current. A slow speed over the whole log approximates a steady rate.
                background = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "streamrec.cli",
                        "replay",
                        args.source,
                        "--speed",
                        str(args.background_rate),
                        "--rebase-now",
                    ],
                    cwd=REPO_ROOT,
                    env=settings_env(settings),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            notices = redis.Redis.from_url(settings.redis_connection_url or "").pubsub()
            notices.subscribe(user_changed_channel(prefix))
            post_ms, notice_ms, sse_ms = [], [], []
            try:
                wait_until_caught_up(settings.bootstrap_servers, f"{prefix}worker")
                for n in range(args.samples):
                    user = f"fresh-{n}-{uuid.uuid4().hex[:6]}"
                    with SseStream(f"{url}/recommend/stream", {"user_id": user, "k": 10}) as sse:
                        sse.next(timeout=10)  # the list at connect
                        sent = time.perf_counter()
                        response = http.post(
                            "/events",
                            json={
                                "user_id": user,
                                "item_id": items[n % len(items)],
                                "action": "click",
                            },
                        )
                        acked = time.perf_counter()
                        response.raise_for_status()
                        noticed = None
                        while noticed is None and time.perf_counter() - sent < 10:
                            message = notices.get_message(timeout=0.5)
                            if (
                                message
                                and message["type"] == "message"
                                and message["data"].decode() == user
                            ):
                                noticed = time.perf_counter()
                        pushed = sse.next(timeout=10)
                    post_ms.append((acked - sent) * 1000)
                    notice_ms.append(((noticed or float("nan")) - sent) * 1000)
                    sse_ms.append((pushed.received_at - sent) * 1000)
            finally:
                if background is not None:
                    background.terminate()
                    background.wait()
    print(summary("POST /events (broker ack)", post_ms, "ms"))
    print(summary("event → 'user changed' notice", notice_ms, "ms"))
    print(summary("event → SSE list (freshness)", sse_ms, "ms"))


if __name__ == "__main__":
    main()
