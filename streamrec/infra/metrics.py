"""Prometheus metric classes that keep their values in this process, their shared
counterparts for a service of several processes, and a /metrics server.

Importing feast switches prometheus_client to multiprocess mode (``feast.metrics`` sets
``PROMETHEUS_MULTIPROC_DIR`` at import); in it every series lives in a per-process file
keyed by name and labels, so a second registry with the same names would start from the
values the first one left. A process that serves its own registry (every service but a
multi-process API) uses ``Counter``, ``Gauge`` and ``Histogram``, which always keep
in-process values. The API run as several processes on one port (``streamrec serve
--workers``) uses ``SharedCounter``, ``SharedGauge`` and ``SharedHistogram``: their series
live in prometheus_client's per-process files, so one scrape can sum every process
(``MultiProcessCollector``) whatever the mode the process's imports left behind.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server, values
from prometheus_client import Counter as _Counter
from prometheus_client import Gauge as _Gauge
from prometheus_client import Histogram as _Histogram

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# From an event's append to the log to its effect: sub-second live, minutes behind a replay.
FRESHNESS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)

# prometheus_client picks the value class of each series (a metric, or a child made by
# ``labels()``) from the module global ``values.ValueClass`` when it creates the series.
_VALUE_CLASS_LOCK = threading.Lock()


class _FixedValues:
    """Makes a metric create its series with the value class of ``_value_class``,
    whatever the mode the process's imports left behind."""

    @staticmethod
    def _value_class() -> type:
        raise NotImplementedError

    def _metric_init(self) -> None:
        with _VALUE_CLASS_LOCK:
            process_mode = values.ValueClass
            values.ValueClass = self._value_class()
            try:
                super()._metric_init()  # type: ignore[misc]
            finally:
                values.ValueClass = process_mode


class _InProcessValues(_FixedValues):
    """Series with in-process values."""

    @staticmethod
    def _value_class() -> type:
        return values.MutexValue


class Counter(_InProcessValues, _Counter):
    pass


class Gauge(_InProcessValues, _Gauge):
    pass


class Histogram(_InProcessValues, _Histogram):
    pass


_shared_value_class: type | None = None


def _multiprocess_value_class() -> type:
    """This process's one file-backed value class: a second one would open the same
    per-process files again and overwrite the first one's series."""
    global _shared_value_class
    if getattr(values.ValueClass, "_multiprocess", False):
        return values.ValueClass
    if _shared_value_class is None:
        _shared_value_class = values.MultiProcessValue()
    return _shared_value_class


class _SharedValues(_FixedValues):
    """Series in the multiprocess files under ``PROMETHEUS_MULTIPROC_DIR``."""

    @staticmethod
    def _value_class() -> type:
        return _multiprocess_value_class()


class SharedCounter(_SharedValues, _Counter):
    pass


class SharedGauge(_SharedValues, _Gauge):
    pass


class SharedHistogram(_SharedValues, _Histogram):
    pass


class MetricsServer:
    """``registry`` on ``http://host:port/metrics`` from a daemon thread, until closed."""

    def __init__(self, registry: CollectorRegistry, port: int, host: str = "127.0.0.1") -> None:
        self._server: Any = None
        try:
            self._server, _thread = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            # Metrics are for watching the process, never a reason to stop it.
            log.warning("metrics not served: %s:%d is not free (%s)", host, port, exc)

    @property
    def serving(self) -> bool:
        return self._server is not None

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
