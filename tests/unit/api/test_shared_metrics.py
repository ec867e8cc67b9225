"""The API's metrics across processes (``streamrec serve --workers``): each process records
in prometheus_client's multiprocess files, and a scrape answered by any of them shows the
whole service. Real processes (spawned, as uvicorn spawns its workers)."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from prometheus_client.parser import text_string_to_metric_families

from api.metrics import ApiMetrics

T = TypeVar("T")


def _record(directory: str, requests: int, streams: int, items: int, leave: bool) -> int:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    metrics = ApiMetrics(shared_dir=Path(directory))
    for _ in range(requests):
        metrics.request_seconds.labels("GET", "/recommend", "200").observe(0.004)
        metrics.recommendations.labels("personal", "http").inc()
    metrics.sse_clients.inc(streams)
    metrics.catalogue_items.set(items)
    if leave:
        metrics.close()
    return os.getpid()


def _scrape(directory: str) -> str:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    return ApiMetrics(shared_dir=Path(directory)).exposition().decode()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _with(labels: tuple[tuple[str, str], ...], **more: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((*labels, *more.items())))


def _in_own_process(function: Callable[..., T], *args: object) -> T:
    """``function(*args)`` in a process of its own, spawned as uvicorn spawns workers."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(function, args)


@pytest.mark.timeout(120)
def test_a_scrape_from_any_process_sums_every_process(tmp_path: Path) -> None:
    directory = str(tmp_path / "api-metrics")
    os.mkdir(directory)
    one = _in_own_process(_record, directory, 7, 2, 100, False)
    two = _in_own_process(_record, directory, 5, 3, 120, False)
    assert one != two
    scrapes = [_in_own_process(_scrape, directory) for _ in range(2)]
    for text in scrapes:
        samples = _samples(text)
        route = (("method", "GET"), ("route", "/recommend"), ("status", "200"))
        assert samples[("streamrec_api_request_seconds_count", route)] == 12
        assert samples[("streamrec_api_request_seconds_bucket", _with(route, le="0.005"))] == 12
        assert samples[("streamrec_api_request_seconds_bucket", _with(route, le="0.0025"))] == 0
        kind = (("channel", "http"), ("kind", "personal"))
        assert samples[("streamrec_api_recommendations_total", kind)] == 12
        # Open streams add up; a count of items is what the last process to set it saw.
        assert samples[("streamrec_api_sse_clients", ())] == 5
        assert samples[("streamrec_api_catalogue_items", ())] in (100, 120)
        # Only the API's series, without a pid label, as one process shows them.
        assert all(name.startswith("streamrec_api_") for name, _ in samples)
        assert not any(dict(labels).get("pid") for _, labels in samples)


@pytest.mark.timeout(120)
def test_a_process_that_leaves_takes_its_gauges_but_not_its_counts(tmp_path: Path) -> None:
    directory = str(tmp_path / "api-metrics")
    os.mkdir(directory)
    _in_own_process(_record, directory, 4, 2, 100, False)
    _in_own_process(_record, directory, 3, 6, 100, True)
    samples = _samples(_in_own_process(_scrape, directory))
    kind = (("channel", "http"), ("kind", "personal"))
    assert samples[("streamrec_api_recommendations_total", kind)] == 7
    assert samples[("streamrec_api_sse_clients", ())] == 2
