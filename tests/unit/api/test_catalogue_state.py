"""Reading the Parquet event log, and the in-process state refreshed from it and the store."""

from __future__ import annotations

import os
from pathlib import Path

from api.adapters.memory_features import InMemoryFeatureReader
from api.catalogue import read_catalogue, read_cooccurrence
from api.metrics import ApiMetrics
from api.ports import ItemStats, PortUnavailable
from api.state import RecommenderState
from tests.unit.api.helpers import write_log


def test_catalogue_counts_items_and_reads_titles(tmp_path: Path) -> None:
    write_log(tmp_path, {"u1": ["a", "b", "a"], "u2": ["b"]}, titles={"a": "Alien", "t": "Tron"})
    catalogue = read_catalogue(tmp_path / "datasets")
    assert catalogue.item_counts == {"a": 2, "b": 2, "t": 0}
    assert catalogue.titles == {"a": "Alien", "t": "Tron"}
    assert catalogue.events == 4


def test_missing_log_dir_is_an_empty_catalogue(tmp_path: Path) -> None:
    assert read_catalogue(tmp_path / "nothing").item_counts == {}
    assert len(read_cooccurrence(tmp_path / "nothing")) == 0


def test_users_of_different_logs_are_kept_apart(tmp_path: Path) -> None:
    # User "1" of one dataset is not user "1" of another: "a" and "z" never meet.
    write_log(tmp_path, {"1": ["a"]}, name="first")
    write_log(tmp_path, {"1": ["z"]}, name="second")
    index = read_cooccurrence(tmp_path / "datasets", min_count=1)
    assert "a" not in index.neighbours
    assert read_catalogue(tmp_path / "datasets").item_counts == {"a": 1, "z": 1}


async def test_state_reads_the_log_and_rebuilds_only_on_change(tmp_path: Path) -> None:
    folder = write_log(tmp_path, {"u1": ["a", "b"], "u2": ["a", "b"]})
    state = RecommenderState(tmp_path / "datasets", InMemoryFeatureReader(), ApiMetrics())
    assert await state.refresh_log() is True
    assert state.index_built.is_set()
    assert [n for n, _ in state.index.neighbours["a"]] == ["b"]
    assert await state.refresh_log() is False

    write_log(tmp_path, {"u1": ["a", "c"], "u2": ["a", "c"]})
    stat = (folder / "events.parquet").stat()
    os.utime(folder / "events.parquet", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert await state.refresh_log() is True
    assert [n for n, _ in state.index.neighbours["a"]] == ["c"]


async def test_online_item_stats_replace_log_counts_in_popularity(tmp_path: Path) -> None:
    write_log(tmp_path, {"u1": ["a", "b"], "u2": ["a"]})
    reader = InMemoryFeatureReader()
    state = RecommenderState(tmp_path / "datasets", reader, ApiMetrics())
    await state.refresh_log()
    assert state.popularity.items == ("a", "b")  # log counts: a=2, b=1

    reader.items["b"] = ItemStats(interaction_count=50, purchase_count=3)
    await state.refresh_items()
    assert state.popularity.items == ("b", "a")


async def test_store_failure_keeps_the_last_item_stats(tmp_path: Path) -> None:
    write_log(tmp_path, {"u1": ["a", "b"], "u2": ["a"]})
    reader = InMemoryFeatureReader()
    reader.items["b"] = ItemStats(interaction_count=50)
    state = RecommenderState(tmp_path / "datasets", reader, ApiMetrics())
    await state.refresh_log()
    await state.refresh_items()
    reader.failure = "redis down"
    await state.refresh_items()
    assert state.popularity.items == ("b", "a")
    assert state.summary().last_item_error == str(PortUnavailable("redis down"))
