"""Faust's own cost per event: an agent that takes batches and does nothing with them.

    .venv/bin/python -m bench.faust_floor [--events 100000] [--repeats 3]

Needs the services (`streamrec services up`). Writes ``--events`` small records to a fresh
3-partition topic, then runs a Faust app configured like the worker's (`streams.app`)
whose one agent only counts batches from ``take_events``, and times it from its first
batch to the last record. Prints events/s and events per CPU-second of that process.

This is the ceiling of a one-process Faust worker on this machine: whatever the worker
does with an event comes on top of it (`bench/worker_throughput.py` prints where that
time goes, stage by stage).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import cast

from bench.stats import summary
from streamrec.settings import load_settings
from streams.events import Topics
from streams.topics import delete_topics, ensure_topics


def _agent(
    bootstrap: str, topic: str, events: int, batch: int, within: float, result: Path
) -> None:
    """The child process: consume ``events`` records, write the times to ``result``."""
    import faust

    app = faust.App(
        f"floor-{uuid.uuid4().hex[:8]}",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        topic_partitions=3,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        broker_commit_every=batch,
        stream_buffer_maxsize=4 * batch,
        datadir=f"/tmp/faust-floor-{os.getpid()}",
    )
    raw: faust.Schema = faust.Schema(key_serializer="raw", value_serializer="raw")
    source = app.topic(topic, partitions=3, schema=raw)
    started: list[float] = []
    seen = [0]

    @app.agent(source, concurrency=1)
    async def count(stream: faust.StreamT) -> None:
        async for records in cast(faust.Stream, stream).take_events(batch, within=within):
            if not started:
                started.extend((time.perf_counter(), time.process_time()))
            seen[0] += len(records)
            if seen[0] >= events:
                wall = time.perf_counter() - started[0]
                cpu = time.process_time() - started[1]
                result.write_text(json.dumps({"events": seen[0], "wall": wall, "cpu": cpu}))
                os._exit(0)

    sys.argv = [sys.argv[0], "worker", "--loglevel", "error"]
    app.main()


def one_run(bootstrap: str, events: int, batch: int, within: float) -> tuple[float, float]:
    from confluent_kafka import Producer

    topics = Topics(f"floor{uuid.uuid4().hex[:8]}.")
    ensure_topics(bootstrap, topics, 3)
    try:
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
        for n in range(events):
            value = json.dumps({"schema": 1, "user_id": f"u{n % 20000}", "item_id": f"i{n}"})
            producer.produce(topics.interactions, key=f"u{n % 20000}", value=value)
            if n % 10000 == 0:
                producer.poll(0)
        producer.flush(60)
        result = Path(tempfile.mkdtemp()) / "result.json"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.faust_floor",
                "--child",
                topics.interactions,
                "--events",
                str(events),
                "--batch",
                str(batch),
                "--within",
                str(within),
                "--result",
                str(result),
            ],
            capture_output=True,
            timeout=600,
            check=True,
        )
        times = json.loads(result.read_text())
        return times["events"] / times["wall"], times["events"] / times["cpu"]
    finally:
        delete_topics(bootstrap, topics.all())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1000, help="take_events size")
    parser.add_argument("--within", type=float, default=0.05, help="take_events timeout")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    bootstrap = load_settings().bootstrap_servers
    if args.child:
        _agent(bootstrap, args.child, args.events, args.batch, args.within, args.result)
        return
    rates, per_cpu = [], []
    for run in range(args.repeats):
        rate, cpu_rate = one_run(bootstrap, args.events, args.batch, args.within)
        rates.append(rate)
        per_cpu.append(cpu_rate)
        print(f"run {run + 1}: {rate:,.0f} events/s, {cpu_rate:,.0f} events per CPU-second")
    print(summary("Faust null agent", rates, "events/s"))
    print(summary("Faust null agent CPU cost", per_cpu, "events/CPU-s"))


if __name__ == "__main__":
    main()
