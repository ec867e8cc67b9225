"""Spark window latency: an event produced → its window value readable in the online store.

    .venv/bin/python bench/spark_window_latency.py [--events 30] [--trigger 0.5]

Needs the services (`streamrec services up`) and the connector jars (`make install-spark`).
The job (`streams.spark.job`, all its queries) runs in this process on fresh topics with a
processing-time trigger. After a warm-up event, each measured event is an interaction with
a new item and the current time as event time; the clock runs from the producer's send
until Feast's `get_online_features` returns the item's trending score, polled every few
milliseconds. Events are sent one at a time, so each one waits for its own micro-batch.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
import uuid
from pathlib import Path

from feast import FeatureStore

from bench.stats import summary
from streamrec.infra.feast_store import apply_definitions, open_store
from streamrec.settings import load_settings
from streams.events import Interaction, Topics
from streams.producer import EventProducer
from streams.sinks import FeastFeatureSink
from streams.spark.job import SparkJobReport, run_spark_job
from streams.topics import delete_topics, ensure_topics

VIEWS = {"1h": "item_windows_1h:trending_1h", "24h": "item_windows_24h:trending_24h"}


def visible(store: FeatureStore, item_id: str, feature: str) -> bool:
    values = store.get_online_features(features=[feature], entity_rows=[{"item_id": item_id}])
    return values.to_dict()[feature.split(":")[1]][0] is not None


def wait_visible(
    store: FeatureStore, item_id: str, start: float, timeout: float
) -> dict[str, float]:
    """Seconds from ``start`` until each window's feature of ``item_id`` was readable."""
    seen: dict[str, float] = {}
    while VIEWS.keys() - seen.keys():
        now = time.perf_counter()
        if now - start > timeout:
            raise TimeoutError(f"{item_id}: not visible in {sorted(VIEWS.keys() - seen.keys())}")
        for name, feature in VIEWS.items():
            if name not in seen and visible(store, item_id, feature):
                seen[name] = time.perf_counter() - start
        time.sleep(0.005)
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=30, help="measured events")
    parser.add_argument("--trigger", type=float, default=0.5, help="micro-batch interval, s")
    parser.add_argument("--timeout", type=float, default=120.0, help="per event, s")
    args = parser.parse_args()
    if args.events < 1:
        parser.error("--events must be at least 1")

    base = load_settings()
    scratch = Path(tempfile.mkdtemp(prefix="spark-bench-"))
    prefix = f"sparkbench{uuid.uuid4().hex[:8]}."
    settings = base.model_copy(
        update={
            "topic_prefix": prefix,
            "state_dir": scratch / "state",
            "data_dir": scratch / "data",
            "spark_trigger_seconds": args.trigger,
        }
    )
    topics = Topics(prefix)
    ensure_topics(settings.bootstrap_servers, topics, settings.topic_partitions)
    store = open_store(settings)
    apply_definitions(store)
    producer = EventProducer(settings.bootstrap_servers, topics)
    stop = threading.Event()
    reports: list[SparkJobReport] = []
    errors: list[BaseException] = []

    def job() -> None:
        try:
            reports.append(run_spark_job(settings, FeastFeatureSink(store), stop=stop))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    runner = threading.Thread(target=job, name="spark-job", daemon=True)
    runner.start()
    try:
        started = time.perf_counter()
        producer.send(Interaction(user_id="warm", item_id="warm-up", action="view")).result(30)
        wait_visible(store, "warm-up", started, timeout=600)
        print(f"job up and first window visible after {time.perf_counter() - started:.1f} s")
        latencies: dict[str, list[float]] = {name: [] for name in VIEWS}
        for n in range(args.events):
            item = f"bench-{n}"
            start = time.perf_counter()
            producer.send(Interaction(user_id=f"user-{n % 7}", item_id=item, action="view"))
            for name, seconds in wait_visible(store, item, start, args.timeout).items():
                latencies[name].append(seconds * 1000)
            if errors:
                raise errors[0]
        for name, values in latencies.items():
            print(summary(f"event → {name} window in the online store", values, "ms"))
    finally:
        stop.set()
        runner.join(timeout=120)
        producer.close()
        delete_topics(
            settings.bootstrap_servers,
            [topics.interactions, topics.recommendations, topics.clicks, topics.dead_letters],
        )
    if errors:
        raise errors[0]
    if reports:
        print(reports[0].summary())


if __name__ == "__main__":
    main()
