"""Prometheus metrics of the API, in a registry of their own per app.

A per-app registry lets tests build many apps in one process and keeps the API's series
apart from whatever else a process registers globally; the metric classes keep their
values in this process even in prometheus_client's multiprocess mode (see
``streamrec.infra.metrics``), so each new app starts from zero.

An API of several processes on one port (``streamrec serve --workers``) builds its metrics
with ``shared=True``: each series lives in prometheus_client's per-process files, and
``/metrics`` answers with every process's files merged (``exposition``), so a scrape
shows the whole service whichever process answers it. Each gauge says how processes
combine: open streams add up, the other gauges report what the process that set them
last saw, and a process that exits takes its gauges with it (``live`` modes,
``mark_process_dead``) while its counts stay in the totals.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from streamrec.infra.metrics import (
    FRESHNESS_BUCKETS,
    LATENCY_BUCKETS,
    Counter,
    Gauge,
    Histogram,
    SharedCounter,
    SharedGauge,
    SharedHistogram,
)

__all__ = ["CONTENT_TYPE_LATEST", "LATENCY_BUCKETS", "ApiMetrics", "Counter", "Gauge", "Histogram"]

# The response header naming the process that answered (``streamrec serve --workers``).
PROCESS_HEADER = "x-streamrec-pid"


class ApiMetrics:
    def __init__(
        self, registry: CollectorRegistry | None = None, *, shared_dir: Path | None = None
    ) -> None:
        """``shared_dir``: the multiprocess directory of an API of several processes
        (prometheus_client's ``PROMETHEUS_MULTIPROC_DIR``, which must name it)."""
        self.registry = registry if registry is not None else CollectorRegistry()
        self.shared_dir = shared_dir
        r = self.registry
        shared = shared_dir is not None
        counter = SharedCounter if shared else Counter
        gauge = SharedGauge if shared else Gauge
        histogram = SharedHistogram if shared else Histogram
        self.request_seconds = histogram(
            "streamrec_api_request_seconds",
            "Time to the first response body byte, per route template (for SSE: first event)",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.events_accepted = counter(
            "streamrec_api_events_accepted_total",
            "Interactions written to the log after a POST /events",
            ["action"],
            registry=r,
        )
        self.events_rejected = counter(
            "streamrec_api_events_rejected_total",
            "POST /events refused: invalid input (422) or log unavailable (503)",
            ["reason"],
            registry=r,
        )
        self.recommendations = counter(
            "streamrec_api_recommendations_total",
            "Recommendation lists computed, by kind (personal or cold_start) and channel",
            ["kind", "channel"],
            registry=r,
        )
        self.served_write_failures = counter(
            "streamrec_api_served_event_failures_total",
            "RecommendationServed events that could not be written (the list was still sent)",
            registry=r,
        )
        self.sse_clients = gauge(
            "streamrec_api_sse_clients",
            "Open /recommend/stream connections",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.feature_read_seconds = histogram(
            "streamrec_api_feature_read_seconds",
            "Online store reads, per feature view",
            ["view"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.feature_read_failures = counter(
            "streamrec_api_feature_read_failures_total",
            "Online store reads that failed",
            ["view"],
            registry=r,
        )
        self.cooccurrence_items = gauge(
            "streamrec_api_cooccurrence_items",
            "Items with neighbours in the current index",
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.catalogue_items = gauge(
            "streamrec_api_catalogue_items",
            "Items known from the event log and catalogue",
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.model_loads = counter(
            "streamrec_api_model_loads_total",
            "Champion model sets loaded from the registry, by outcome (loaded or failed)",
            ["outcome"],
            registry=r,
        )
        self.model_registry_failures = counter(
            "streamrec_api_model_registry_failures_total",
            "Registry polls that got no answer (the served set was kept)",
            registry=r,
        )
        self.model_load_seconds = gauge(
            "streamrec_api_model_load_seconds",
            "Time the last champion set took to download and build",
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.model_info = gauge(
            "streamrec_api_model_info",
            "1 for the set being served, 0 for sets served before; none while the baseline serves",
            ["model_version", "model_set"],
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.recommend_refused = counter(
            "streamrec_api_recommend_overloaded_total",
            "GET /recommend requests refused with 503: their list had to be computed while "
            "STREAMREC_API_MAX_IN_PROGRESS others of the process waited for inference",
            registry=r,
        )
        self.stage_fallbacks = counter(
            "streamrec_api_stage_fallbacks_total",
            "Cascade stages that fell back on a request, by stage and the source that answered",
            ["stage", "source"],
            registry=r,
        )
        self.answer_memo = counter(
            "streamrec_api_answer_memo_total",
            "Lists by source (cascade, baseline) and outcome: hit (kept: the user's row, the "
            "served set and the titles unchanged since it was computed) or miss (computed)",
            ["source", "outcome"],
            registry=r,
        )
        self.recommend_seconds = histogram(
            "streamrec_api_recommend_seconds",
            "One recommendation list, features to answer, by strategy variant and channel",
            ["variant", "channel"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.feature_reads = counter(
            "streamrec_api_feature_reads_total",
            "Online store reads by outcome: hit, or miss (the entity has no row yet)",
            ["view", "outcome"],
            registry=r,
        )
        self.sse_update_seconds = histogram(
            "streamrec_api_sse_update_seconds",
            "From a 'user changed' notice to the new list sent on the stream (debounce "
            "included); with the worker's event-to-feature time it makes event-to-SSE",
            buckets=FRESHNESS_BUCKETS,
            registry=r,
        )
        self.inference_seconds = histogram(
            "streamrec_api_inference_seconds",
            "Model compute of one request (the cascade, or the baseline item-kNN)",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # The families a scrape of several processes keeps.
        self._names = frozenset(metric.name for metric in r.collect())

    def exposition(self) -> bytes:
        """The text a scrape of ``/metrics`` gets: this registry, or with ``shared_dir``
        the API's series of every process, summed."""
        if self.shared_dir is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry(auto_describe=False)
        merged.register(_SharedApiCollector(self.shared_dir, self._names))
        return generate_latest(merged)

    def close(self) -> None:
        """This process is leaving: its ``live`` gauges go with it."""
        if self.shared_dir is not None:
            mark_process_dead(os.getpid(), str(self.shared_dir))


class _SharedApiCollector(Collector):
    """The API's families merged from every process's files; any other series a library
    wrote there (Feast's, in a process that imported it) is left out, as with one process."""

    def __init__(self, path: Path, names: frozenset[str]) -> None:
        self._path = path
        self._names = names

    def collect(self) -> Iterator[Metric]:
        for metric in MultiProcessCollector(None, path=str(self._path)).collect():
            if metric.name in self._names:
                yield metric


class RequestMetricsMiddleware:
    """Records each request's latency under its route template, never the raw path."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics
        # Which process answered: with several on one port, an operator (and the tests)
        # can tell them apart.
        self._process_header = (PROCESS_HEADER.encode(), str(os.getpid()).encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        recorded = False

        def record() -> None:
            nonlocal recorded
            if recorded:
                return
            recorded = True
            route = scope.get("route")
            # Unmatched paths share one label: a scanner must not create a series per URL.
            template = (
                route.path
                if isinstance(route, BaseRoute) and hasattr(route, "path")
                else "<unmatched>"
            )
            self.metrics.request_seconds.labels(scope["method"], template, str(status)).observe(
                time.perf_counter() - started
            )

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), self._process_header]
            await send(message)
            if message["type"] == "http.response.body":
                record()

        try:
            await self.app(scope, receive, timed_send)
        finally:
            record()
