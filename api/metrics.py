"""Prometheus metrics of the API, in a registry of their own per app.

A per-app registry lets tests build many apps in one process and keeps the API's series
apart from whatever else a process registers globally; the metric classes keep their
values in this process even in prometheus_client's multiprocess mode (see
``streamrec.infra.metrics``), so each new app starts from zero.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from streamrec.infra.metrics import (
    FRESHNESS_BUCKETS,
    LATENCY_BUCKETS,
    Counter,
    Gauge,
    Histogram,
)

__all__ = ["LATENCY_BUCKETS", "ApiMetrics", "Counter", "Gauge", "Histogram"]


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
            "1 for the set being served, 0 for sets served before; none while the baseline serves",
            ["model_version", "model_set"],
            registry=r,
        )
        self.stage_fallbacks = Counter(
            "streamrec_api_stage_fallbacks_total",
            "Cascade stages that fell back on a request, by stage and the source that answered",
            ["stage", "source"],
            registry=r,
        )
        self.recommend_seconds = Histogram(
            "streamrec_api_recommend_seconds",
            "One recommendation list, features to answer, by strategy variant and channel",
            ["variant", "channel"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.feature_reads = Counter(
            "streamrec_api_feature_reads_total",
            "Online store reads by outcome: hit, or miss (the entity has no row yet)",
            ["view", "outcome"],
            registry=r,
        )
        self.sse_update_seconds = Histogram(
            "streamrec_api_sse_update_seconds",
            "From a 'user changed' notice to the new list sent on the stream (debounce "
            "included); with the worker's event-to-feature time it makes event-to-SSE",
            buckets=FRESHNESS_BUCKETS,
            registry=r,
        )
        self.inference_seconds = Histogram(
            "streamrec_api_inference_seconds",
            "Model compute of one request (the cascade, or the baseline item-kNN)",
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
