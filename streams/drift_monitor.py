"""`streamrec drift`: a periodic job over the archive that compares the newest window of
interactions with a reference window and exports each test's score to Prometheus.

A periodic job over the Parquet archive rather than a stream consumer: the tests need a
whole window at once, the archive already holds the events in event-time order with
duplicates removed, and a check a minute is plenty for an alert that waits ten. The
reference is the serving set's, saved with it by ``streamrec train``
(``streams.drift_reference``); the live window is the newest interactions after the set's
training window. Without a set, ``reference_until`` names a reference window in the
archive: the ``window_events`` interactions before it, against the newest after it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
from prometheus_client import CollectorRegistry

from streamrec.infra.metrics import Gauge
from streamrec.paths import ITEMS_FILE, datasets_dir
from streamrec.settings import Settings
from streams.archiver import read_interactions
from streams.drift import DriftResult, Window, compare
from streams.drift_reference import LiveWindow, Reference, compare_with_reference

log = logging.getLogger(__name__)


@dataclass
class DriftMetrics:
    registry: CollectorRegistry
    score: Gauge
    detected: Gauge
    window_events: Gauge

    @classmethod
    def create(cls) -> DriftMetrics:
        registry = CollectorRegistry()
        return cls(
            registry=registry,
            score=Gauge(
                "streamrec_drift_score",
                "Last drift test per column: a p-value (ks, chi2) or a distance",
                ["column", "test"],
                registry=registry,
            ),
            detected=Gauge(
                "streamrec_drift_detected",
                "1 when the column's last test crossed its threshold",
                ["column"],
                registry=registry,
            ),
            window_events=Gauge(
                "streamrec_drift_window_events",
                "Interactions in the compared windows",
                ["window"],
                registry=registry,
            ),
        )

    def record(self, results: list[DriftResult], reference: int, current: int) -> None:
        for r in results:
            self.score.labels(r.column, r.test).set(r.score)
            self.detected.labels(r.column).set(1 if r.drifted else 0)
        self.window_events.labels("reference").set(reference)
        self.window_events.labels("current").set(current)


def catalogue_categories(data_dir: Path, items_path: Path | None = None) -> dict[str, str]:
    """Each catalogued item's first category (the category mix needs one per item): from
    ``items_path``, else from every prepared dataset's catalogue."""
    found: dict[str, str] = {}
    folder = datasets_dir(data_dir)
    paths = [items_path] if items_path is not None else []
    if not paths and folder.is_dir():
        paths = sorted(folder.glob(f"*/{ITEMS_FILE}"))
    for path in paths:
        table = pq.read_table(path, columns=["item_id", "categories"]).to_pylist()
        for row in table:
            if row["categories"]:
                found.setdefault(str(row["item_id"]), str(row["categories"][0]))
    return found


def _window(table: object, categories: dict[str, str]) -> Window:
    t = table  # a pyarrow Table of interactions
    return Window.of(
        t["user_id"].to_pylist(),  # type: ignore[index]
        t["item_id"].to_pylist(),  # type: ignore[index]
        t["action"].to_pylist(),  # type: ignore[index]
        categories,
    )


def check_against(settings: Settings, reference: Reference) -> tuple[list[DriftResult], int, int]:
    """The newest archived interactions after the set's training window against the set's
    saved reference: (results, reference size, live size); no results before the live
    window holds the reference's window size."""
    table = read_interactions(settings.data_dir, settings.topic_prefix)
    after = table.filter(pc.greater_equal(table["event_time"], reference.until_ms))
    current = after.slice(max(0, after.num_rows - reference.window_events))
    if current.num_rows < reference.window_events:
        return [], reference.events, current.num_rows
    live = LiveWindow(
        current["user_id"].to_pylist(),
        current["item_id"].to_pylist(),
        current["action"].to_pylist(),
    )
    return compare_with_reference(reference, live), reference.events, current.num_rows


def check_once(
    settings: Settings, reference_until_ms: int, window_events: int
) -> tuple[list[DriftResult], int, int]:
    """One comparison against the window just before ``reference_until_ms`` (when no set
    with a saved reference serves): (results, reference size, live size); no results
    before both windows hold ``window_events // 10`` interactions."""
    table = read_interactions(settings.data_dir, settings.topic_prefix)
    before = table.filter(pc.less(table["event_time"], reference_until_ms))
    after = table.filter(pc.greater_equal(table["event_time"], reference_until_ms))
    reference = before.slice(max(0, before.num_rows - window_events))
    current = after.slice(max(0, after.num_rows - window_events))
    if min(reference.num_rows, current.num_rows) < max(1, window_events // 10):
        return [], reference.num_rows, current.num_rows
    categories = catalogue_categories(settings.data_dir)
    results = compare(_window(reference, categories), _window(current, categories))
    return results, reference.num_rows, current.num_rows


def run_drift_monitor(
    settings: Settings,
    metrics: DriftMetrics,
    *,
    reference: Callable[[], Reference | None] | int,
    window_events: int,
    every_seconds: float,
    stop: threading.Event,
    once: bool = False,
) -> list[DriftResult]:
    """``reference``: the serving set's saved reference, looked up before each check, or
    the end of a reference window in the archive (epoch ms)."""
    results: list[DriftResult] = []
    while True:
        if isinstance(reference, int):
            results, n_ref, n_cur = check_once(settings, reference, window_events)
        elif (saved := reference()) is not None:
            results, n_ref, n_cur = check_against(settings, saved)
        else:
            log.info("drift: no serving set with a saved reference yet")
            results, n_ref, n_cur = [], 0, 0
        metrics.record(results, n_ref, n_cur)
        for r in results:
            log.info("drift %s %s=%.4g%s", r.column, r.test, r.score, " DRIFT" if r.drifted else "")
        if once or stop.wait(every_seconds):
            return results
