"""The worker's flow metrics: batch sizes and event-to-feature freshness.

Kept apart from the counters in ``streams.app`` and registered on the same registry, so the
worker's ``/metrics`` page serves both. Freshness runs from a record's Kafka timestamp
(the time our producers sent it, not the event's own ``event_time``, which a replay takes
from the dataset) to the moment its user's features were written: a live event and a
replayed one are measured alike.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

from streamrec.infra.metrics import FRESHNESS_BUCKETS, Histogram

BATCH_SIZE_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000)


@dataclass
class WorkerFlowMetrics:
    batch_size: Histogram
    event_to_feature_seconds: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry) -> WorkerFlowMetrics:
        return cls(
            batch_size=Histogram(
                "streamrec_worker_batch_size",
                "Records in one batch the worker folded",
                ["topic"],
                buckets=BATCH_SIZE_BUCKETS,
                registry=registry,
            ),
            event_to_feature_seconds=Histogram(
                "streamrec_event_to_feature_seconds",
                "From a record's append to the log to its user's features in the online store",
                buckets=FRESHNESS_BUCKETS,
                registry=registry,
            ),
        )

    def batch_folded(self, topic: str, events: Sequence[Any], *, written: bool = True) -> None:
        """Record one batch of Faust events; ``written``: its features are in the store now."""
        self.batch_size.labels(topic).observe(len(events))
        if not written:
            return
        now = time.time()
        for event in events:
            sent = event.message.timestamp  # seconds, the producer's create time
            if sent:
                self.event_to_feature_seconds.observe(max(0.0, now - sent))
