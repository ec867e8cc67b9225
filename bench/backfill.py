"""Backfill time: rebuild the online store from a synthetic log of N events in Kafka.

    .venv/bin/python bench/backfill.py [--events 1000000] [--repeats 3]

Needs the services (`streamrec services up`). The synthetic log is prepared once and
replayed into fresh topics at max speed (not timed); each repeat then times
`run_backfill` (read the topics, fold, push every user and item to the Feast online store
in Redis) end to end in this process, and prints events/s and seconds with median and p95.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

from bench.stats import summary
from streamrec.infra.feast_store import apply_definitions, open_store
from streamrec.infra.processes import run_streamrec
from streamrec.settings import load_settings
from streams.backfill import run_backfill
from streams.events import Topics
from streams.sinks import FeastFeatureSink
from streams.topics import delete_topics, ensure_topics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    base = load_settings()
    prefix = f"benchbf{uuid.uuid4().hex[:8]}."
    with tempfile.TemporaryDirectory() as scratch:
        settings = base.model_copy(
            update={"topic_prefix": prefix, "data_dir": Path(scratch) / "data"}
        )
        topics = Topics(prefix)
        ensure_topics(settings.bootstrap_servers, topics, settings.topic_partitions)
        try:
            spec = f"synthetic:users={args.users},items={args.items},events={args.events},seed=1"
            run_streamrec(settings, "data", "prepare", spec, timeout=3600)
            started = time.perf_counter()
            run_streamrec(settings, "replay", "synthetic", "--speed", "max", timeout=3600)
            print(f"replayed into Kafka in {time.perf_counter() - started:.1f}s", flush=True)
            store = open_store(settings)
            apply_definitions(store)
            sink = FeastFeatureSink(store)
            seconds, rates = [], []
            for run in range(args.repeats):
                report = run_backfill(settings, sink)
                seconds.append(report.seconds)
                rates.append(report.records / report.seconds)
                print(f"run {run + 1}: {report.summary()}", flush=True)
            print(summary("backfill time", seconds, "s"))
            print(summary("backfill rate", rates, "events/s"))
        finally:
            delete_topics(settings.bootstrap_servers, topics.all())


if __name__ == "__main__":
    main()
