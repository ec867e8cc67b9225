"""The worker folding served lists nobody clicks: CPU per list, resident memory and the
requests its join holds, this build against an earlier one, in one run.

    .venv/bin/python bench/join_worker.py [--lists 100000] [--span-minutes 180] [--rate 1000]
        [--before REV]

Needs the services (`streamrec services up`). Each run uses fresh topics and one
`streamrec worker`: ``--lists`` RecommendationServed events of ten items (3,000 users,
event times spread evenly over ``--span-minutes``, no click) are produced into the
recommendations topic, the first hundredth before the worker starts and the rest at
``--rate`` lists per second once it has committed, as an API would serve them; the clock
runs from its first committed offset until its group has no lag left. Prints per run
the lists per second, the worker's CPU-ms per list (user + system time over the same
span, from /proc), its resident memory at the end, and the requests its join holds
(``streamrec_join_requests_held``; a build without that gauge prints "-").

``--interactions N`` first sends the first N interactions of the prepared log
``--source`` (MovieLens-100K by default) and starts the clock only once the worker has
folded them: the item states then hold their co-visitation counts, as on a running stack,
and the lists' items are drawn in proportion to their interactions (the popular items a
served cascade mostly lists) rather than evenly from 1,700 ids.

``--before REV`` runs the worker of the git revision REV (the repository at REV, extracted
with ``git archive`` into a scratch directory) over its own fresh topics in turn with
this build's, ``--repeats`` times, and prints the ratios of the medians.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import statistics
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from bench.stack import fresh_topics
from bench.stack_cpu import _cpu, listeners
from bench.worker_throughput import _cpu_seconds
from replay.encoding import Records, encode_rows
from streamrec.infra.feast_store import apply_definitions, open_store
from streamrec.infra.lag import consumer_lag
from streamrec.infra.processes import streamrec_process
from streamrec.paths import REPO_ROOT, dataset_events
from streamrec.settings import Settings, load_settings
from streams.events import RecommendationServed, RecommendedItem, Topics
from streams.producer import EventProducer

T0 = 1_700_000_000_000


def _rss_mib(pid: int) -> float:
    pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _held(port: int) -> str:
    """The worker's ``streamrec_join_requests_held``, or "-" without it."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as page:
        for line in page.read().decode().splitlines():
            if line.startswith("streamrec_join_requests_held "):
                return f"{float(line.split()[1]):,.0f}"
    return "-"


def lists(
    count: int, span_minutes: float, seed: int, weights: dict[str, int] | None = None
) -> Iterator[RecommendationServed]:
    """``count`` lists of ten items: drawn by ``weights`` (item -> weight), or evenly
    from 1,700 ids; independently, so a list may name an item twice (about one list in
    thirteen by MovieLens-100K's popularity; one in forty evenly)."""
    rng = random.Random(seed)
    step = span_minutes * 60_000 / count
    ids = list(weights) if weights else [str(n) for n in range(1700)]
    chances = list(weights.values()) if weights else None
    for n in range(count):
        items = tuple(
            RecommendedItem(item_id=item_id, rank=k + 1, score=1.0, reason="r")
            for k, item_id in enumerate(rng.choices(ids, chances, k=10))
        )
        yield RecommendationServed(
            user_id=f"u{rng.randrange(3000)}",
            request_id=uuid.uuid4().hex,
            variant="a",
            model_version="m",
            event_time=T0 + int(n * step),
            items=items,
        )


def produce(producer: EventProducer, events: Iterator[RecommendationServed], rate: float) -> None:
    """Send ``events`` at ``rate`` per second (or at once for an infinite rate)."""
    started = time.perf_counter()
    for n, event in enumerate(events):
        if rate != float("inf"):
            time.sleep(max(0.0, started + n / rate - time.perf_counter()))
        producer.send(event)
    producer.flush()


@dataclass(frozen=True)
class History:
    """The first interactions of a prepared log, as the replay encodes them, and how
    often each item comes in them."""

    records: Records
    item_counts: dict[str, int]

    @classmethod
    def of(cls, base: Settings, source: str, count: int) -> History:
        table = pq.read_table(dataset_events(base.data_dir, source))
        table = table.sort_by("event_time").slice(0, count).combine_chunks()
        counts = Counter(str(item) for item in table.column("item_id").to_pylist())
        return cls(encode_rows(table.to_batches()[0]), dict(counts))


def broker_cpu_seconds(settings: Settings) -> float:
    """CPU seconds of the processes listening on the broker's ports (0 if none is seen)."""
    processes = listeners({"kafka": list(settings.local_broker_ports)}).get("kafka", [])
    return sum(_cpu(process) for process in processes)


def one_run(
    base: Settings,
    root: Path,
    scratch: Path,
    args: argparse.Namespace,
    history: History | None,
) -> tuple[float, float, float, str, float]:
    """Lists per second, CPU-ms per list, resident MiB, requests held and the broker's
    CPU-ms per list, for one run."""
    with fresh_topics(base, scratch / uuid.uuid4().hex[:8]) as settings:
        topics = Topics(settings.topic_prefix)
        apply_definitions(open_store(settings))
        weights = history.item_counts if history else None
        events = lists(args.lists, args.span_minutes, args.seed, weights)
        head = itertools.islice(events, max(1, args.lists // 100))
        with EventProducer(settings.bootstrap_servers, topics) as producer:
            if history:
                for key, value in zip(history.records.keys, history.records.values, strict=True):
                    producer.send_raw(topics.interactions, key, value)
            produce(producer, head, float("inf"))
            group = f"{settings.topic_prefix}worker"
            first: tuple[float, int, float, float] | None = None
            log = settings.state_dir / "worker.log"
            with streamrec_process(settings, "worker", log=log, root=root) as proc:
                while True:
                    rows = [r for r in consumer_lag(settings.bootstrap_servers) if r.group == group]
                    served = [r for r in rows if r.topic == topics.recommendations]
                    seeded = [r for r in rows if r.topic == topics.interactions]
                    now = time.perf_counter()
                    folded = sum(max(r.committed, 0) for r in served)
                    history_folded = not history or (
                        seeded and all(r.lag == 0 and r.committed >= 0 for r in seeded)
                    )
                    if first is None and folded > 0 and history_folded:
                        first = (now, folded, _cpu_seconds(proc.pid), broker_cpu_seconds(settings))
                        produce(producer, events, args.rate)
                        continue
                    if first is not None and served and all(r.lag == 0 for r in served):
                        start, already, cpu, broker = first
                        count = folded - already
                        cpu_ms = 1000 * (_cpu_seconds(proc.pid) - cpu) / count
                        held = _held(settings.worker_port)
                        broker_ms = 1000 * (broker_cpu_seconds(settings) - broker) / count
                        rss = _rss_mib(proc.pid)
                        return count / (now - start), cpu_ms, rss, held, broker_ms
                    if proc.poll() is not None:
                        raise SystemExit(f"worker exited with {proc.returncode}")
                    time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lists", type=int, default=100_000)
    parser.add_argument("--span-minutes", type=float, default=180.0)
    parser.add_argument("--rate", type=float, default=1000.0, help="lists per second sent")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--before", help="a git revision whose worker to compare with")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--interactions", type=int, default=0, help="of --source, sent first")
    parser.add_argument("--source", default="movielens-100k", help="a prepared log")
    args = parser.parse_args()
    base = load_settings()
    history = History.of(base, args.source, args.interactions) if args.interactions else None
    print(
        f"{args.lists:,} served lists of 10 over {args.span_minutes:g} min of event time, "
        f"no click, after {len(history.records) if history else 0:,} interactions of "
        f"{args.source}"
    )
    results: dict[str, list[tuple[float, float, float, str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        builds = {"this build": REPO_ROOT}
        if args.before:
            old = scratch / "before"
            old.mkdir()
            archive = subprocess.run(
                ["git", "-C", str(REPO_ROOT), "archive", args.before],
                check=True,
                capture_output=True,
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
            builds[f"at {args.before}"] = old
        for repeat in range(args.repeats):
            order = list(builds.items())
            if repeat % 2:
                order.reverse()
            for name, root in order:
                run = one_run(base, root, scratch, args, history)
                results.setdefault(name, []).append(run)
                rate, cpu_ms, rss, held, broker_ms = run
                print(
                    f"{name}: {rate:,.0f} lists/s, {cpu_ms:.2f} CPU-ms per list "
                    f"(the broker {broker_ms:.2f}), {rss:,.0f} MiB resident, "
                    f"{held} requests held",
                    flush=True,
                )
    medians = {
        name: (statistics.median(r[1] for r in runs), statistics.median(r[2] for r in runs))
        for name, runs in results.items()
    }
    if args.before:
        (after_cpu, after_rss), (before_cpu, before_rss) = medians.values()
        print(
            f"ratio before/after: CPU per list {before_cpu / after_cpu:.1f}x, "
            f"resident memory {before_rss / after_rss:.1f}x"
        )


if __name__ == "__main__":
    main()
