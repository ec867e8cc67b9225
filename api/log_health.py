"""The system's health as the cockpit shows it: the worker's consumer lag, events/s into
the log, and the two halves of freshness.

Lag and events/s come from one consumer-lag probe (``streamrec.infra.lag``), run in a
worker thread at most every ``min_interval`` seconds however many pages poll; events/s is
the growth of the interactions topic's end offsets between two probes.

Freshness is measured where it happens: event → features by the worker
(``streamrec_event_to_feature_seconds``, read as the p95 recording rule from the
Prometheus that scrapes it), and features → list on a stream here
(``streamrec_api_sse_update_seconds``, from this process's registry).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio
import httpx
from confluent_kafka import KafkaException
from prometheus_client import CollectorRegistry

from streamrec.infra.lag import PartitionLag, consumer_lag


@dataclass(frozen=True)
class LogHealth:
    worker_lag: int | None  # records the worker has not committed yet; None: unknown
    events_per_second: float | None  # interactions appended to the log per second
    log_end: int | None  # interactions in the log
    freshness_p95_seconds: float | None  # event -> features p95; None: not measured yet
    error: str | None = None
    sse_update_p95_seconds: float | None = None  # features -> SSE list p95, this process


class LogHealthProbe:
    def __init__(
        self,
        bootstrap_servers: str,
        topic_prefix: str,
        registry: CollectorRegistry,
        *,
        min_interval: float = 2.0,
        probe: Callable[[str], list[PartitionLag]] = consumer_lag,
        prometheus_url: str | None = None,
    ) -> None:
        self._prometheus = prometheus_url
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
        sse = histogram_p95(self._registry, SSE_UPDATE_HISTOGRAM)
        freshness = await self._worker_freshness()
        try:
            rows = await anyio.to_thread.run_sync(self._probe, self._servers)
        except KafkaException as exc:
            return LogHealth(None, None, None, freshness, f"consumer lag: {exc}", sse)
        worker = [r for r in rows if r.group == self._group and r.topic == self._topic]
        if not worker:
            return LogHealth(
                None, None, None, freshness, "the worker has committed nothing yet", sse
            )
        end = sum(r.end for r in worker)
        rate = None
        if self._previous_end is not None and now > self._previous_end[0]:
            rate = max(0, end - self._previous_end[1]) / (now - self._previous_end[0])
        self._previous_end = (now, end)
        return LogHealth(sum(r.lag for r in worker), rate, end, freshness, None, sse)

    async def _worker_freshness(self) -> float | None:
        """The worker's event -> features p95 over 5 minutes, from Prometheus; None when
        no Prometheus answers or it has no samples yet (no event folded lately)."""
        if self._prometheus is None:
            return None
        try:
            async with httpx.AsyncClient(timeout=PROMETHEUS_TIMEOUT) as client:
                response = await client.get(
                    f"{self._prometheus}/api/v1/query", params={"query": WORKER_FRESHNESS_RULE}
                )
            result = response.json()["data"]["result"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None
        if not result:
            return None
        value = float(result[0]["value"][1])
        return value if math.isfinite(value) else None


SSE_UPDATE_HISTOGRAM = "streamrec_api_sse_update_seconds"
# deploy/prometheus/recording.rules.yml
WORKER_FRESHNESS_RULE = "streamrec_event_to_feature_seconds:p95_5m"
PROMETHEUS_TIMEOUT = 1.0


def histogram_p95(registry: CollectorRegistry, name: str) -> float | None:
    """p95 of the histogram ``name`` in the registry, from its cumulative buckets (the
    upper bound of the bucket holding the 95th percentile); None before any sample."""
    for metric in registry.collect():
        if metric.type != "histogram" or metric.name != name:
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
