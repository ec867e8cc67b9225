"""The request path: Feast online reads and `GET /recommend`, median and tail latencies.

    .venv/bin/python bench/request_path.py [--source movielens-100k] [--requests 500]

Starts its own worker and API on fresh topics with the log replayed (bench/stack.py).
Measures, in one run: a one-row `get_online_features` (a user's recent items), a
100-row read (item counts), and `/recommend` over HTTP for known users at k=10.
"""

from __future__ import annotations

import argparse
import random
import time

import httpx
import pyarrow.parquet as pq

from bench.stack import running_stack
from bench.stats import percentile, summary
from streamrec.infra.feast_store import open_store


def _timed_ms(call: object, repeats: int) -> list[float]:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()  # type: ignore[operator]
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="movielens-100k")
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args()
    with running_stack(args.source) as stack, httpx.Client(base_url=stack.url, timeout=30) as http:
        log = pq.read_table(stack.settings.data_dir / "datasets" / args.source / "events.parquet")
        users = sorted(set(log["user_id"].to_pylist()))
        items = sorted(set(log["item_id"].to_pylist()))
        rng = random.Random(0)
        store = open_store(stack.settings)
        one_row = _timed_ms(
            lambda: store.get_online_features(
                features=["user_recent:recent_items", "user_recent:recent_times"],
                entity_rows=[{"user_id": rng.choice(users)}],
            ),
            args.requests,
        )
        hundred_rows = _timed_ms(
            lambda: store.get_online_features(
                features=["item_stats:interaction_count", "item_stats:click_count"],
                entity_rows=[{"item_id": i} for i in rng.sample(items, 100)],
            ),
            args.requests // 5,
        )
        http.get("/recommend", params={"user_id": users[0], "k": 10}).raise_for_status()
        recommend = _timed_ms(
            lambda: http.get(
                "/recommend", params={"user_id": rng.choice(users), "k": 10}
            ).raise_for_status(),
            args.requests,
        )
    for name, values in (
        ("Feast read, 1 row (user_recent)", one_row),
        ("Feast read, 100 rows (item_stats)", hundred_rows),
        ("GET /recommend k=10, over HTTP", recommend),
    ):
        print(summary(name, values, "ms") + f", p99 {percentile(values, 99):.1f}")


if __name__ == "__main__":
    main()
