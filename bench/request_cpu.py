"""CPU time per request of running APIs, measured in turn in one run: a figure that a
shared, busy machine disturbs far less than latency.

    .venv/bin/python bench/request_cpu.py --api NAME=URL:PID [--api ...] [--requests 2000]
        [--concurrency 16] [--repeats 3] [--ingest-keys K1,K2,...]

For each repeat and API in turn: ``--requests`` of ``GET /recommend`` (random MovieLens
users) and of ``POST /events``, ``--concurrency`` at a time, and the CPU seconds the API's
process (``PID``, with its threads and child processes, so ``streamrec serve --workers N``
counts whole) used meanwhile, from ``/proc``. Prints the median CPU
milliseconds per request and, against the first API, the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import os
import random
import statistics

import httpx

from bench.stats import summary


def cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and its live descendants (the processes of ``streamrec serve
    --workers N`` under their supervisor)."""
    total = 0.0
    for process in [pid, *descendants(pid)]:
        try:
            with open(f"/proc/{process}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # ended meanwhile
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    for children in glob.glob(f"/proc/{pid}/task/*/children"):
        try:
            with open(children) as listed:
                kids = [int(child) for child in listed.read().split()]
        except FileNotFoundError:
            continue
        for kid in kids:
            found += [kid, *descendants(kid)]
    return found


async def load(url: str, target: str, requests: int, concurrency: int, keys: list[str]) -> int:
    rng = random.Random(3)
    failures = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(requests):
        queue.put_nowait(n)

    async def client() -> None:
        nonlocal failures
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            while not queue.empty():
                queue.get_nowait()
                user = str(rng.randint(1, 943))
                if target == "recommend":
                    response = await http.get("/recommend", params={"user_id": user, "k": 10})
                else:
                    body = {"user_id": user, "item_id": str(rng.randint(1, 1682)), "action": "view"}
                    headers = {"X-Ingest-Key": rng.choice(keys)} if keys else {}
                    response = await http.post("/events", json=body, headers=headers)
                failures += response.status_code >= 300

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--api", action="append", required=True, help="NAME=URL:PID")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--ingest-keys",
        default="",
        help="comma-separated; events spread over them (the rate limit is per client)",
    )
    args = parser.parse_args()
    apis = []
    for spec in args.api:
        name, _, rest = spec.partition("=")
        url, _, pid = rest.rpartition(":")
        apis.append((name, url, int(pid)))
    keys = [key for key in args.ingest_keys.split(",") if key]
    per_request: dict[tuple[str, str], list[float]] = {}
    for repeat in range(args.repeats):
        for target in ("recommend", "events"):
            for name, url, pid in apis:
                before = cpu_seconds(pid)
                failed = asyncio.run(load(url, target, args.requests, args.concurrency, keys))
                used = cpu_seconds(pid) - before
                per_request.setdefault((target, name), []).append(1000 * used / args.requests)
                print(
                    f"run {repeat + 1} {name} {target}: {1000 * used / args.requests:.2f} "
                    f"CPU-ms per request ({failed} failed)",
                    flush=True,
                )
    first = apis[0][0]
    for target in ("recommend", "events"):
        for name, _, _ in apis:
            values = per_request[(target, name)]
            ratio = statistics.median(values) / statistics.median(per_request[(target, first)])
            print(
                summary(f"{name} {target}", values, "CPU-ms/request") + f"; {ratio:.2f}x of {first}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
