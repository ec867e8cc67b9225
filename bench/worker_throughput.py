"""Worker throughput: events/s folded into Feast by one `streamrec worker` process.

    .venv/bin/python bench/worker_throughput.py [--source movielens-100k] [--repeats 3]

Needs the services (`streamrec services up`) and a prepared log (`streamrec data prepare`).
Each run uses fresh topics: the log is first replayed into Kafka at max speed with the
worker stopped, then the worker starts and the clock runs from its first committed offset
until its consumer group has no lag left (interactions and the item-activity topic).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

from bench.stats import summary
from streamrec.feast_store import apply_definitions, open_store
from streamrec.processes import free_port, run_streamrec, streamrec_process
from streamrec.settings import Settings, load_settings
from streams.events import Topics
from streams.lag import consumer_lag
from streams.topics import delete_topics, ensure_topics


def one_run(base: Settings, source: str, scratch: Path) -> tuple[int, float]:
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    settings = base.model_copy(
        update={"topic_prefix": prefix, "state_dir": scratch / prefix, "worker_port": free_port()}
    )
    topics = Topics(prefix)
    ensure_topics(settings.bootstrap_servers, topics, settings.topic_partitions)
    apply_definitions(open_store(settings))
    try:
        run_streamrec(settings, "replay", source, "--speed", "max")
        group = f"{prefix}worker"
        first_commit: tuple[float, int] | None = None
        with streamrec_process(settings, "worker", log=scratch / f"{prefix}worker.log") as proc:
            while True:
                rows = [r for r in consumer_lag(settings.bootstrap_servers) if r.group == group]
                now = time.perf_counter()
                folded = sum(max(r.committed, 0) for r in rows if r.topic == topics.interactions)
                if first_commit is None and folded > 0:
                    first_commit = (now, folded)
                activity = [r for r in rows if r.topic.endswith("worker-item-activity")]
                done = rows and activity and all(r.lag == 0 for r in rows)
                total = sum(r.end for r in rows if r.topic == topics.interactions)
                if done and first_commit is not None and folded == total:
                    start, already = first_commit
                    return total - already, now - start
                if proc.poll() is not None:
                    raise SystemExit(f"worker exited with {proc.returncode}")
                time.sleep(0.1)
    finally:
        names = [t for t in _topic_names(settings) if t.startswith(prefix)]
        delete_topics(settings.bootstrap_servers, names)


def _topic_names(settings: Settings) -> list[str]:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    return list(admin.list_topics(timeout=10).topics)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="movielens-100k")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    base = load_settings()
    rates = []
    with tempfile.TemporaryDirectory() as scratch:
        for run in range(args.repeats):
            events, seconds = one_run(base, args.source, Path(scratch))
            rates.append(events / seconds)
            print(
                f"run {run + 1}: {events:,} events in {seconds:.2f}s = {rates[-1]:,.0f} events/s",
                flush=True,
            )
    print(summary("worker throughput", rates, "events/s"))


if __name__ == "__main__":
    main()
