"""Event-to-SSE freshness: from `POST /events` to the new list on `/recommend/stream`.

    .venv/bin/python bench/sse_freshness.py [--source movielens-100k] [--samples 30]
        [--background-speed 0 | --background-rate 1000]

Starts its own worker and API on fresh topics with the log replayed (bench/stack.py),
then for each sample opens a stream for a fresh user, posts one event and times: the
POST itself (broker ack), the "user changed" notice on Redis, and the new SSE list.
With --background-speed X a second replay of the log runs at X times real time
meanwhile (rebased to now), so the worker is busy while freshness is measured;
--background-rate N picks the speed at which that replay averages N events/s.
"""

from __future__ import annotations

import argparse
import time
import uuid

import httpx
import redis

from api.sse_client import SseStream
from bench.background import background_replay, speed_for_rate
from bench.stack import running_stack
from bench.stats import summary
from streamrec.infra.notify import changed_users, user_changed_channel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="movielens-100k")
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument(
        "--background-speed",
        type=float,
        default=0.0,
        help="replay the log again at this speed while measuring (0: no background load)",
    )
    parser.add_argument(
        "--background-rate",
        type=float,
        default=0.0,
        help="replay the log again at the speed that averages this many events/s",
    )
    args = parser.parse_args()
    if args.background_speed > 0 and args.background_rate > 0:
        parser.error("give --background-speed or --background-rate, not both")
    post_ms: list[float] = []
    notice_ms: list[float] = []
    sse_ms: list[float] = []
    with running_stack(args.source) as stack, httpx.Client(base_url=stack.url, timeout=30) as http:
        settings = stack.settings
        warm = http.get("/recommend", params={"user_id": "warm", "k": 50}).json()
        items = [item["item_id"] for item in warm["items"]]
        if args.background_rate > 0:
            args.background_speed = speed_for_rate(
                settings.data_dir, args.source, args.background_rate
            )
            print(f"background replay at {args.background_speed:,.0f}x real time", flush=True)
        with background_replay(settings, args.source, speed=args.background_speed):
            notices = redis.Redis.from_url(settings.redis_connection_url or "").pubsub()
            notices.subscribe(user_changed_channel(settings.topic_prefix))
            for n in range(args.samples):
                user = f"fresh-{n}-{uuid.uuid4().hex[:6]}"
                with SseStream(f"{stack.url}/recommend/stream", {"user_id": user, "k": 10}) as sse:
                    sse.next(timeout=10)  # the list sent at connect
                    event = {"user_id": user, "item_id": items[n % len(items)], "action": "click"}
                    sent = time.perf_counter()
                    http.post("/events", json=event).raise_for_status()
                    acked = time.perf_counter()
                    noticed = float("nan")
                    while time.perf_counter() - sent < 10:
                        message = notices.get_message(timeout=0.5)
                        if (
                            message
                            and message["type"] == "message"
                            and user in changed_users(message["data"])
                        ):
                            noticed = time.perf_counter()
                            break
                    pushed = sse.next(timeout=10)
                post_ms.append((acked - sent) * 1000)
                notice_ms.append((noticed - sent) * 1000)
                sse_ms.append((pushed.received_at - sent) * 1000)
    print(summary("POST /events (broker ack)", post_ms, "ms"))
    print(summary("event → 'user changed' notice", notice_ms, "ms"))
    print(summary("event → SSE list (freshness)", sse_ms, "ms"))


if __name__ == "__main__":
    main()
