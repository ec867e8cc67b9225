"""The system's health as the cockpit shows it: the worker's consumer lag, events/s into
the log, and freshness p95 where the API measures it.

Lag and events/s come from one consumer-lag probe (``streamrec.infra.lag``), run in a
worker thread at most every ``min_interval`` seconds however many pages poll; events/s is
the growth of the interactions topic's end offsets between two probes.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio
from confluent_kafka import KafkaException
from prometheus_client import CollectorRegistry

from streamrec.infra.lag import PartitionLag, consumer_lag


@dataclass(frozen=True)
class LogHealth:
    worker_lag: int | None  # records the worker has not committed yet; None: unknown
    events_per_second: float | None  # interactions appended to the log per second
    log_end: int | None  # interactions in the log
    freshness_p95_seconds: float | None  # None: no freshness histogram in the registry
    error: str | None = None


class LogHealthProbe:
    def __init__(
        self,
        bootstrap_servers: str,
        topic_prefix: str,
        registry: CollectorRegistry,
        *,
        min_interval: float = 2.0,
        probe: Callable[[str], list[PartitionLag]] = consumer_lag,
    ) -> None:
        self._servers = bootstrap_servers
        self._group = f"{topic_prefix}worker"
        self._topic = f"{topic_prefix}interactions"
        self._registry = registry
        self._min_interval = min_interval
        self._probe = probe
        self._lock = asyncio.Lock()
        self._last: tuple[float, LogHealth] | None = None
        self._previous_end: tuple[float, int] | None = None

    async def read(self) -> LogHealth:
        async with self._lock:
            now = time.monotonic()
            if self._last is not None and now - self._last[0] < self._min_interval:
                return self._last[1]
            health = await self._measure(now)
            self._last = (now, health)
            return health

    async def _measure(self, now: float) -> LogHealth:
        freshness = freshness_p95(self._registry)
        try:
            rows = await anyio.to_thread.run_sync(self._probe, self._servers)
        except KafkaException as exc:
            return LogHealth(None, None, None, freshness, f"consumer lag: {exc}")
        worker = [r for r in rows if r.group == self._group and r.topic == self._topic]
        if not worker:
            return LogHealth(None, None, None, freshness, "the worker has committed nothing yet")
        end = sum(r.end for r in worker)
        rate = None
        if self._previous_end is not None and now > self._previous_end[0]:
            rate = max(0, end - self._previous_end[1]) / (now - self._previous_end[0])
        self._previous_end = (now, end)
        return LogHealth(sum(r.lag for r in worker), rate, end, freshness)


def freshness_p95(registry: CollectorRegistry) -> float | None:
    """p95 of the first histogram named ``*freshness*_seconds`` in the registry, from its
    cumulative buckets (the upper bound of the bucket holding the 95th percentile)."""
    for metric in registry.collect():
        if metric.type != "histogram" or "freshness" not in metric.name:
            continue
        buckets: dict[float, float] = {}
        for sample in metric.samples:
            if sample.name.endswith("_bucket"):
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
        total = buckets.get(math.inf, 0.0)
        if total <= 0:
            return None
        for bound in sorted(buckets):
            if buckets[bound] >= 0.95 * total:
                return bound if math.isfinite(bound) else None
    return None
