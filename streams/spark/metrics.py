"""The Spark job's metrics: batch duration, rows read and pushed per window query, lag.

Read from each query's progress reports (``recentProgress``, which Spark keeps for the
last hundred batches) by the job's loop once a second, and from the batch ledgers on
scrape. Kafka lag is the source's latest offset minus the offset the last batch read to.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streamrec.infra.metrics import Counter, Histogram

if TYPE_CHECKING:
    from streams.spark.job import RunningQuery

BATCH_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


def _offsets(value: Any) -> dict[str, dict[str, int]]:
    """A Kafka source's offsets, {topic: {partition: offset}}; Spark gives them as JSON."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


def source_lag(progress: Any) -> list[tuple[str, str, int]]:
    """(topic, partition, records behind) for one progress report's Kafka sources."""
    rows = []
    for source in progress["sources"] or []:
        end, latest = _offsets(source["endOffset"]), _offsets(source["latestOffset"])
        for topic, partitions in latest.items():
            for partition, newest in partitions.items():
                done = end.get(topic, {}).get(partition, newest)
                rows.append((topic, str(partition), max(0, int(newest) - int(done))))
    return rows


class SparkJobMetrics(Collector):
    """Register with :meth:`registry`; call :meth:`absorb` from the job's loop."""

    def __init__(self) -> None:
        self._registry = CollectorRegistry()
        self.batch_seconds = Histogram(
            "streamrec_spark_batch_seconds",
            "Duration of one micro-batch (trigger execution), per window query",
            ["query"],
            buckets=BATCH_BUCKETS,
            registry=self._registry,
        )
        self.input_rows = Counter(
            "streamrec_spark_input_rows",
            "Kafka records read, per window query",
            ["query"],
            registry=self._registry,
        )
        self._registry.register(self)
        self._running: Sequence[RunningQuery] = ()
        self._last_batch: dict[str, int] = {}
        self._lag: dict[tuple[str, str, str], int] = {}

    @property
    def registry(self) -> CollectorRegistry:
        return self._registry

    def absorb(self, running: Sequence[RunningQuery]) -> None:
        """Observe the batches reported since the last call."""
        self._running = running
        for r in running:
            last = self._last_batch.get(r.name, -1)
            newest: Any = None
            for progress in r.query.recentProgress:
                batch_id = int(progress["batchId"])
                if batch_id <= last:
                    continue
                last, newest = batch_id, progress
                duration_ms = (progress["durationMs"] or {}).get("triggerExecution", 0)
                self.batch_seconds.labels(r.name).observe(duration_ms / 1000)
                self.input_rows.labels(r.name).inc(int(progress["numInputRows"]))
            self._last_batch[r.name] = last
            if newest is not None:
                for topic, partition, behind in source_lag(newest):
                    self._lag[(r.name, topic, partition)] = behind

    def collect(self) -> Iterator[Metric]:
        rows = CounterMetricFamily(
            "streamrec_spark_rows_pushed",
            "Feature rows pushed to the online store, per window query",
            labels=["query"],
        )
        for r in self._running:
            rows.add_metric([r.name], r.ledger.state.rows)
        yield rows
        lag = GaugeMetricFamily(
            "streamrec_consumer_lag_records",
            "Records between the last batch's end offset and the log end, per partition",
            labels=["query", "topic", "partition"],
        )
        for (query, topic, partition), behind in sorted(self._lag.items()):
            lag.add_metric([query, topic, partition], behind)
        yield lag
