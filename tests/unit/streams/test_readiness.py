"""The online-store readiness marker, with a dict-backed store."""

from __future__ import annotations

from typing import Any

import pytest

from streamrec.infra.readiness import features_status, mark_pushed, marker_key, note_push


class DictStore:
    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, name: str) -> Any:
        return self.data.get(name)

    def set(self, name: str, value: str) -> None:
        self.data[name] = value.encode()  # redis-py returns bytes


def test_empty_store_is_not_ready_and_says_why() -> None:
    status = features_status(DictStore(), "p1.")
    assert not status.ready
    assert "empty or wiped" in status.detail and "backfill" in status.detail


def test_marker_makes_ready_and_wipe_makes_not_ready() -> None:
    store = DictStore()
    mark_pushed(store, "p1.", "backfill", now=100.0)
    status = features_status(store, "p1.", now=130.0)
    assert status.ready and "backfill" in status.detail and "30s" in status.detail
    store.data.clear()  # Redis restarted empty
    assert not features_status(store, "p1.").ready


def test_markers_are_per_prefix() -> None:
    store = DictStore()
    mark_pushed(store, "p1.", "worker")
    assert features_status(store, "p1.").ready
    assert not features_status(store, "p2.").ready
    assert marker_key("p1.") != marker_key("p2.")


def test_corrupt_marker_is_not_ready() -> None:
    store = DictStore()
    store.set(marker_key("p1."), "not json")
    status = features_status(store, "p1.")
    assert not status.ready and "unreadable" in status.detail


@pytest.mark.parametrize(("prefix", "source"), [("", "worker"), ("p1.", "")])
def test_bad_arguments_are_rejected(prefix: str, source: str) -> None:
    with pytest.raises(ValueError):
        mark_pushed(DictStore(), prefix, source)


def test_age_is_of_the_latest_push_wall_clock_against_wall_clock() -> None:
    """Issue 19: "pushed by worker 650s ago" one second after the worker pushed."""
    store = DictStore()
    mark_pushed(store, "p1.", "worker", now=1000.0)  # written once per worker
    note_push(store, "p1.", now=1649.0)
    status = features_status(store, "p1.", now=1650.0)
    assert status.ready and "last push 1s ago" in status.detail
    store.data.clear()  # a wipe still makes it not ready, whatever the last push
    note_push(store, "p1.", now=1651.0)
    assert not features_status(store, "p1.", now=1652.0).ready
