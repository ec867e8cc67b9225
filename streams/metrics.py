"""The worker's Prometheus metrics and the ``/metrics`` page that serves them."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import faust
from faust.exceptions import ConsumerNotStarted
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from streams.faust_patches import committed_offsets


@dataclass
class WorkerMetrics:
    registry: CollectorRegistry
    events: Counter
    dead_letters: Counter
    duplicates: Counter
    redelivered: Counter
    push_seconds: Histogram
    batch_seconds: Histogram
    stage_seconds: Histogram
    lag: Gauge

    @classmethod
    def create(cls) -> WorkerMetrics:
        registry = CollectorRegistry()
        return cls(
            registry=registry,
            events=Counter(
                "streamrec_worker_events", "Events folded", ["topic"], registry=registry
            ),
            dead_letters=Counter(
                "streamrec_worker_dead_letters",
                "Records sent to the dead-letter topic",
                ["topic"],
                registry=registry,
            ),
            duplicates=Counter(
                "streamrec_worker_duplicates",
                "Redelivered events recognised by event_id and skipped",
                registry=registry,
            ),
            redelivered=Counter(
                "streamrec_worker_redelivered",
                "Records at or below an already folded offset (redelivery after a crash), skipped",
                ["topic"],
                registry=registry,
            ),
            batch_seconds=Histogram(
                "streamrec_worker_batch_seconds",
                "Time to fold one batch, pushes included",
                ["topic"],
                registry=registry,
                buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            ),
            stage_seconds=Histogram(
                "streamrec_worker_stage_seconds",
                "Time of one stage of a batch: decode_fold, table_write, feast_push_and_seen, "
                "notify, send_entries (interactions); fold_entries, table_write, feast_push "
                "(item activity)",
                ["topic", "stage"],
                registry=registry,
                buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
            ),
            lag=Gauge(
                "streamrec_worker_consumer_lag",
                "Records between the committed offset and the log end, per partition "
                "(set when /metrics is read)",
                ["topic", "partition"],
                registry=registry,
            ),
            push_seconds=Histogram(
                "streamrec_worker_push_seconds",
                "Time of one Feast push",
                ["source"],
                registry=registry,
                buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            ),
        )


class Laps:
    """Observes the time since the previous lap as one stage of a batch."""

    def __init__(self, metrics: WorkerMetrics, topic: str) -> None:
        self._histogram = metrics.stage_seconds
        self._topic = topic
        self._last = time.perf_counter()

    def __call__(self, stage: str) -> None:
        now = time.perf_counter()
        self._histogram.labels(self._topic, stage).observe(now - self._last)
        self._last = now


def add_metrics_page(app: faust.App, metrics: WorkerMetrics) -> None:
    """Serve ``metrics`` as Prometheus text at ``/metrics`` on the worker's web port."""

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        update_lag(app, metrics)
        return web.bytes(generate_latest(metrics.registry), content_type="text/plain")


def update_lag(app: faust.App, metrics: WorkerMetrics) -> None:
    """Set the lag gauge from the consumer's view: log end minus committed offset."""
    consumer = app.consumer
    committed = committed_offsets(app)
    try:
        assigned = consumer.assignment()
    except ConsumerNotStarted:  # /metrics answers before the consumer has started
        return
    for tp in assigned:
        end = consumer.highwater(tp)
        if end is None:
            continue
        done = committed.get(tp)
        metrics.lag.labels(tp.topic, str(tp.partition)).set(end - (done or 0))
