"""Prometheus metrics of the API, in a registry of their own per app.

A per-app registry lets tests build many apps in one process and keeps the API's series
apart from whatever else a process registers globally.

The values are kept in this process, in the metric objects themselves, even when
prometheus_client is in multiprocess mode. That mode is process-wide and is switched on
by importing feast before prometheus_client (``feast.metrics`` sets
``PROMETHEUS_MULTIPROC_DIR`` at import); in it every series lives in a per-process file
keyed by name and labels, so each new app would start from the values the previous one
left. The API serves its own registry from one process, never the multiprocess
collector, so that mode would only break the per-app separation.
"""

from __future__ import annotations

import threading
import time

from prometheus_client import CollectorRegistry, values
from prometheus_client import Counter as _Counter
from prometheus_client import Gauge as _Gauge
from prometheus_client import Histogram as _Histogram
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


# prometheus_client picks the value class of each series (a metric, or a child made by
# ``labels()``) from the module global ``values.ValueClass`` when it creates the series.
_VALUE_CLASS_LOCK = threading.Lock()


class _InProcessValues:
    """Makes a metric create its series with in-process values, whatever the mode."""

    def _metric_init(self) -> None:
        with _VALUE_CLASS_LOCK:
            process_mode = values.ValueClass
            values.ValueClass = values.MutexValue
            try:
                super()._metric_init()  # type: ignore[misc]
            finally:
                values.ValueClass = process_mode


class Counter(_InProcessValues, _Counter):
    pass


class Gauge(_InProcessValues, _Gauge):
    pass


class Histogram(_InProcessValues, _Histogram):
    pass


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.request_seconds = Histogram(
            "streamrec_api_request_seconds",
            "Time to the first response body byte, per route template (for SSE: first event)",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.events_accepted = Counter(
            "streamrec_api_events_accepted_total",
            "Interactions written to the log after a POST /events",
            ["action"],
            registry=r,
        )
        self.events_rejected = Counter(
            "streamrec_api_events_rejected_total",
            "POST /events refused: invalid input (422) or log unavailable (503)",
            ["reason"],
            registry=r,
        )
        self.recommendations = Counter(
            "streamrec_api_recommendations_total",
            "Recommendation lists computed, by kind (personal or cold_start) and channel",
            ["kind", "channel"],
            registry=r,
        )
        self.served_write_failures = Counter(
            "streamrec_api_served_event_failures_total",
            "RecommendationServed events that could not be written (the list was still sent)",
            registry=r,
        )
        self.sse_clients = Gauge(
            "streamrec_api_sse_clients", "Open /recommend/stream connections", registry=r
        )
        self.feature_read_seconds = Histogram(
            "streamrec_api_feature_read_seconds",
            "Online store reads, per feature view",
            ["view"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.feature_read_failures = Counter(
            "streamrec_api_feature_read_failures_total",
            "Online store reads that failed",
            ["view"],
            registry=r,
        )
        self.cooccurrence_items = Gauge(
            "streamrec_api_cooccurrence_items",
            "Items with neighbours in the current index",
            registry=r,
        )
        self.catalogue_items = Gauge(
            "streamrec_api_catalogue_items",
            "Items known from the event log and catalogue",
            registry=r,
        )
        self.model_loads = Counter(
            "streamrec_api_model_loads_total",
            "Champion model sets loaded from the registry, by outcome (loaded or failed)",
            ["outcome"],
            registry=r,
        )
        self.model_registry_failures = Counter(
            "streamrec_api_model_registry_failures_total",
            "Registry polls that got no answer (the served set was kept)",
            registry=r,
        )
        self.model_load_seconds = Gauge(
            "streamrec_api_model_load_seconds",
            "Time the last champion set took to download and build",
            registry=r,
        )
        self.model_info = Gauge(
            "streamrec_api_model_info",
            "1 for the set being served, 0 for sets served before; none while the heuristic serves",
            ["model_version", "model_set"],
            registry=r,
        )
        self.stage_fallbacks = Counter(
            "streamrec_api_stage_fallbacks_total",
            "Cascade stages that fell back on a request, by stage and the source that answered",
            ["stage", "source"],
            registry=r,
        )
        self.inference_seconds = Histogram(
            "streamrec_api_inference_seconds",
            "Model compute of one request (the cascade, or the heuristic's scoring)",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )


class RequestMetricsMiddleware:
    """Records each request's latency under its route template, never the raw path."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

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
            await send(message)
            if message["type"] == "http.response.body":
                record()

        try:
            await self.app(scope, receive, timed_send)
        finally:
            record()
