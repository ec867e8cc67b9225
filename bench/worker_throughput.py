"""Worker throughput: events/s folded into Feast by 1 and by 2 `streamrec worker` processes.

    .venv/bin/python bench/worker_throughput.py [--events 1000000] [--workers 1 2] [--repeats 3]

Needs the services (`streamrec services up`). A synthetic log of ``--events`` events is
prepared once (or ``--source NAME`` uses a prepared log). Each run uses fresh topics
(``topic_partitions``, 3 by default): the log is first replayed into Kafka at max speed
with the workers stopped, then N workers of one consumer group start and the clock runs
from their first committed offset until the group has no lag left (interactions and the
item-activity topic). Prints events/s per run and median and p95 per worker count.

Beside the wall-clock rate it prints events per CPU-second of the worker processes (user +
system time over the same span, from /proc): on a shared machine the wall-clock rate
drops with every other busy process, while the CPU cost of an event does not. A worker is
one Python process and mostly holds the GIL, so events per CPU-second is about the rate
one worker reaches on a core of its own.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bench.stack import fresh_topics
from bench.stats import summary
from streamrec.infra.feast_store import apply_definitions, open_store
from streamrec.infra.lag import consumer_lag
from streamrec.infra.processes import free_port, run_streamrec, streamrec_process
from streamrec.settings import Settings, load_settings
from streams.events import Topics


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_run(base: Settings, source: str, scratch: Path, workers: int) -> tuple[int, float, float]:
    """Events folded, wall seconds and worker CPU seconds, from the first commit to no lag."""
    with fresh_topics(base, scratch / uuid.uuid4().hex[:8]) as settings:
        prefix = settings.topic_prefix
        topics = Topics(prefix)
        apply_definitions(open_store(settings))
        run_streamrec(settings, "replay", source, "--speed", "max", timeout=3600)
        group = f"{prefix}worker"
        first_commit: tuple[float, int, float] | None = None
        ports = [free_port() for _ in range(workers)]
        with contextlib.ExitStack() as stack:
            procs = [
                stack.enter_context(
                    streamrec_process(
                        settings.model_copy(
                            update={"worker_port": port, "state_dir": settings.state_dir / str(n)}
                        ),
                        "worker",
                        log=scratch / f"{prefix}worker{n}.log",
                    )
                )
                for n, port in enumerate(ports)
            ]
            while True:
                rows = [r for r in consumer_lag(settings.bootstrap_servers) if r.group == group]
                now = time.perf_counter()
                folded = sum(max(r.committed, 0) for r in rows if r.topic == topics.interactions)
                if first_commit is None and folded > 0:
                    first_commit = (now, folded, sum(_cpu_seconds(p.pid) for p in procs))
                activity = [r for r in rows if r.topic.endswith("worker-item-activity")]
                done = rows and activity and all(r.lag == 0 for r in rows)
                total = sum(r.end for r in rows if r.topic == topics.interactions)
                if done and first_commit is not None and folded == total:
                    start, already, cpu = first_commit
                    cpu = sum(_cpu_seconds(p.pid) for p in procs) - cpu
                    _print_stages(ports, total)
                    return total - already, now - start, cpu
                for proc in procs:
                    if proc.poll() is not None:
                        raise SystemExit(f"worker exited with {proc.returncode}")
                time.sleep(0.1)


def _print_stages(ports: list[int], events: int) -> None:
    """Where a batch's time went: each stage's total over all workers, per folded event.

    From the workers' ``streamrec_worker_stage_seconds`` histograms (wall time inside the
    agent, so a stage waiting on Redis or a thread counts too); the whole run, including
    the part before the clock started.
    """
    totals: dict[tuple[str, str], float] = {}
    for port in ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as page:
            text = page.read().decode()
        for family in text_string_to_metric_families(text):
            if family.name != "streamrec_worker_stage_seconds":
                continue
            for sample in family.samples:
                if sample.name.endswith("_sum"):
                    key = (sample.labels["topic"].rsplit(".", 1)[-1], sample.labels["stage"])
                    totals[key] = totals.get(key, 0.0) + sample.value
    for (topic, stage), seconds in sorted(totals.items()):
        per_event = seconds / events * 1e6
        print(f"  {topic:>22} {stage:<20} {seconds:7.2f} s = {per_event:6.1f} us/event")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=None, help="a prepared log instead of synthetic")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=20_000, help="synthetic users")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    base = load_settings()
    with tempfile.TemporaryDirectory() as scratch:
        source = args.source
        if source is None:
            base = base.model_copy(update={"data_dir": Path(scratch) / "data"})
            spec = f"synthetic:users={args.users},items=10000,events={args.events},seed=1"
            run_streamrec(base, "data", "prepare", spec, timeout=3600)
            source = "synthetic"
        results = {}
        for workers in args.workers:
            rates, per_cpu = [], []
            for run in range(args.repeats):
                events, seconds, cpu = one_run(base, source, Path(scratch), workers)
                rates.append(events / seconds)
                per_cpu.append(events / cpu)
                print(
                    f"{workers} worker(s), run {run + 1}: {events:,} events in {seconds:.2f}s "
                    f"= {rates[-1]:,.0f} events/s; {cpu:.1f} worker CPU-s "
                    f"= {per_cpu[-1]:,.0f} events per CPU-second",
                    flush=True,
                )
            results[workers] = rates, per_cpu
    for workers, (rates, per_cpu) in results.items():
        print(summary(f"worker throughput, {workers} process(es)", rates, "events/s"))
        print(summary(f"worker CPU cost, {workers} process(es)", per_cpu, "events/CPU-s"))


if __name__ == "__main__":
    main()
