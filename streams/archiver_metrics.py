"""The archiver's metrics, read from its running totals when Prometheus scrapes.

A collector rather than counters bumped per record: the archiver already counts records,
rows and skips per topic (``ArchiveStats``), and its consumer knows its positions, so the
hot loop stays as it is.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streams.archiver import Archiver


class ArchiverCollector(Collector):
    def __init__(self, archiver: Archiver) -> None:
        self._archiver = archiver

    def collect(self) -> Iterator[Metric]:
        stats = self._archiver.stats
        for name, doc, counts in (
            ("streamrec_archiver_records", "Records consumed", stats.records),
            ("streamrec_archiver_rows_written", "Rows written to Parquet", stats.rows_written),
            ("streamrec_archiver_skipped", "Undecodable records skipped", stats.skipped),
        ):
            family = CounterMetricFamily(name, doc, labels=["topic"])
            for topic, n in sorted(dict(counts).items()):  # a copy: the loop adds topics
                family.add_metric([topic], n)
            yield family
        files = CounterMetricFamily("streamrec_archiver_files", "Parquet part files written")
        files.add_metric([], len(stats.files))
        yield files
        lag = GaugeMetricFamily(
            "streamrec_consumer_lag_records",
            "Records between the consumer's position and the log end, per partition",
            labels=["topic", "partition"],
        )
        for topic, partition, behind in self._archiver.lag():
            lag.add_metric([topic, str(partition)], behind)
        yield lag


def archiver_registry(archiver: Archiver) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(ArchiverCollector(archiver))
    return registry
