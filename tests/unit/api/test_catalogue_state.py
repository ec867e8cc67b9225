"""Reading the Parquet event log, and the in-process state refreshed from it and the store."""

from __future__ import annotations

import os
from pathlib import Path

from api.adapters.memory_features import InMemoryFeatureReader
from api.catalogue import read_catalogue, read_events
from api.metrics import ApiMetrics
from api.ports import ItemStats, PortUnavailable, RecentItems
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
    assert len(read_events(tmp_path / "nothing")) == 0


def test_every_dataset_s_events_are_read(tmp_path: Path) -> None:
    write_log(tmp_path, {"1": ["a"]}, name="first")
    write_log(tmp_path, {"1": ["z"]}, name="second")
    events = read_events(tmp_path / "datasets")
    assert sorted(events["item_id"]) == ["a", "z"]
    assert read_catalogue(tmp_path / "datasets").item_counts == {"a": 1, "z": 1}


def neighbours(state: RecommenderState, item: str) -> list[str]:
    """The items the baseline recommends to a user who touched only ``item``."""
    from api.serving.baseline import recommend

    one = RecentItems(items=(item,), times=(0,))
    picks = recommend(one, 5, index=state.index, popularity=state.popularity)
    return [s.item_id for s in picks if s.because_of == item]


def rewrite_log(data_dir: Path, sequences: dict[str, list[str]]) -> None:
    """``write_log`` again, its file's mtime a second later: the state sees a new log even
    within the file system's timestamp resolution."""
    events = write_log(data_dir, sequences) / "events.parquet"
    stat = events.stat()
    os.utime(events, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))


async def test_state_reads_the_log_and_rebuilds_only_on_change(tmp_path: Path) -> None:
    write_log(tmp_path, {"u1": ["a", "b"], "u2": ["a", "b"]})
    state = RecommenderState(tmp_path / "datasets", InMemoryFeatureReader(), ApiMetrics())
    assert await state.refresh_log() is True
    assert state.index_built.is_set()
    assert neighbours(state, "a") == ["b"]
    assert await state.refresh_log() is False

    rewrite_log(tmp_path, {"u1": ["a", "c"], "u2": ["a", "c"]})
    assert await state.refresh_log() is True
    assert neighbours(state, "a") == ["c"]


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


async def test_the_index_counts_what_the_stream_reached_and_the_archive(tmp_path: Path) -> None:
    """Dataset events after the stream's clock are not replayed yet: not counted; the
    archive's events (live ones included) are."""
    import pandas as pd

    from tests.unit.api.helpers import BASE_TIME

    # step 0: a, step 1: b (u1, u2); step 2: c. The store has seen up to step 1.
    write_log(tmp_path, {"u1": ["a", "b", "c"], "u2": ["a", "b", "c"]})
    archive = tmp_path / "archive" / "interactions"
    archive.mkdir(parents=True)
    reader = InMemoryFeatureReader()
    reader.items.update(
        {i: ItemStats(interaction_count=1, last_event_time=BASE_TIME + 1000) for i in "ab"}
    )
    state = RecommenderState(
        tmp_path / "datasets", reader, ApiMetrics(), archive_dir=archive, baseline_rebuild_seconds=0
    )
    await state.refresh_log()
    await state.refresh_items()
    assert state.clock() == BASE_TIME + 1000
    assert neighbours(state, "a") == ["b"]  # c is in the dataset's future

    live = pd.DataFrame(
        {"user_id": ["live"] * 2, "item_id": ["a", "z"], "event_time": [BASE_TIME + 10**12] * 2}
    )
    live.to_parquet(archive / "p0000-0-1.parquet")
    await state.refresh_items()
    assert sorted(neighbours(state, "a")) == ["b", "z"]


async def test_live_events_far_ahead_do_not_move_how_far_the_datasets_were_replayed(
    tmp_path: Path,
) -> None:
    from tests.unit.api.helpers import BASE_TIME

    write_log(tmp_path, {"u1": ["a", "b", "c"]})
    reader = InMemoryFeatureReader()
    reader.items["a"] = ItemStats(interaction_count=1, last_event_time=BASE_TIME)
    # More live items than the stream's clock can ignore, decades after the datasets.
    for n in range(80):
        reader.items[f"live{n}"] = ItemStats(interaction_count=1, last_event_time=BASE_TIME * 2)
    state = RecommenderState(tmp_path / "datasets", reader, ApiMetrics())
    await state.refresh_log()
    await state.refresh_items()
    assert state.clock() == BASE_TIME


async def test_the_item_refresh_reads_the_ledgers_rows_and_a_share_of_the_others_in_turn(
    tmp_path: Path,
) -> None:
    from api.state import ITEM_SWEEP_REFRESHES

    items = [f"i{n:03d}" for n in range(2 * ITEM_SWEEP_REFRESHES)]  # a sweep reads 2 a time
    write_log(tmp_path, {"u1": items})
    reader = InMemoryFeatureReader()
    for item in items:
        reader.write_item(item, ItemStats(interaction_count=1), at_ms=1_000_000.0)
    state = RecommenderState(tmp_path / "datasets", reader, ApiMetrics())
    await state.refresh_log()  # the first refresh: every row
    assert sorted(reader.items_read) == items
    reader.write_item("i020", ItemStats(interaction_count=50), at_ms=2_000_000.0)
    await state.refresh_items()  # the rows at the last refresh's mark too (the slack)
    assert state.popularity.items[0] == "i020"

    reader.items_read.clear()
    reader.write_item("i022", ItemStats(interaction_count=40), at_ms=3_000_000.0)
    await state.refresh_items()
    # The ledger's rows since the last refresh's latest write (i20's, within the slack),
    # then the sweep's next two: not the catalogue.
    assert reader.items_read == ["i020", "i022", "i002", "i003"]
    assert state.popularity.items[:2] == ("i020", "i022")
    assert state.online_stats["i010"] is reader.items["i010"]  # the others kept as they were

    # A row written without a ledger entry (a backfill) is read when the sweep reaches it.
    reader.items["i003"] = ItemStats(interaction_count=90)
    read: list[str] = []
    for _ in range(ITEM_SWEEP_REFRESHES):
        reader.items_read.clear()
        await state.refresh_items()
        read += reader.items_read
        assert len(reader.items_read) <= 2 + 2  # i22 (the slack) and the sweep's two
    assert set(read) == set(items)  # every row once in a whole sweep
    assert state.popularity.items[0] == "i003"


async def test_the_item_refresh_reads_every_row_when_the_items_change_or_without_a_ledger(
    tmp_path: Path,
) -> None:
    write_log(tmp_path, {"u1": ["a", "b"]})
    reader = InMemoryFeatureReader()
    reader.write_item("a", ItemStats(interaction_count=1), at_ms=1_000_000.0)
    state = RecommenderState(tmp_path / "datasets", reader, ApiMetrics())
    await state.refresh_log()
    reader.items_read.clear()
    await state.refresh_items()
    assert reader.items_read == ["a"]  # the ledger's (in its slack), also the sweep's first

    # New items in the log: a full read, so rows the ledger never named are read too.
    rewrite_log(tmp_path, {"u1": ["a", "b", "z"]})
    reader.items["z"] = ItemStats(interaction_count=9)
    reader.items_read.clear()
    await state.refresh_log()
    await state.refresh_items()
    assert "z" in reader.items_read and state.online_stats["z"].interaction_count == 9

    # A store that keeps no ledger: every refresh reads every row, as before.
    reader.changes = None
    reader.items_read.clear()
    await state.refresh_items()
    assert sorted(reader.items_read) == ["a", "b", "z"]


class _CountingChampion:
    """Stands in for the champion watcher: what the state asks of it, counted."""

    def __init__(self) -> None:
        self.current: object = object()
        self.aligned_to: list[dict[str, ItemStats]] = []

    def item_ids(self) -> tuple[str, ...]:
        return ("a", "m")

    async def refresh_items(self, stats: dict[str, ItemStats]) -> None:
        self.aligned_to.append(stats)


async def test_the_served_sets_features_are_realigned_only_when_a_row_or_the_set_changed(
    tmp_path: Path,
) -> None:
    write_log(tmp_path, {"u1": ["a", "b"]})
    reader = InMemoryFeatureReader()
    reader.write_item("m", ItemStats(interaction_count=1), at_ms=1_000_000.0)
    champion = _CountingChampion()
    state = RecommenderState(tmp_path / "datasets", reader, ApiMetrics(), champion)  # type: ignore[arg-type]
    await state.refresh_log()
    assert len(champion.aligned_to) == 1 and "m" in champion.aligned_to[0]  # the set's items
    await state.refresh_items()
    await state.refresh_items()
    assert len(champion.aligned_to) == 1  # nothing changed: the features stand
    reader.write_item("b", ItemStats(interaction_count=5), at_ms=2_000_000.0)
    await state.refresh_items()
    assert len(champion.aligned_to) == 2 and champion.aligned_to[-1]["b"].interaction_count == 5
    champion.current = object()  # another set swapped in meanwhile
    await state.refresh_items()
    assert len(champion.aligned_to) == 3
