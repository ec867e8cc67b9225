"""Offline feature history: the worker's folding, replayed over the archived log."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from replay.dataset import EVENTS_SCHEMA
from streams.archiver import INTERACTION_SCHEMA
from streams.events import Click, Interaction
from streams.folding import (
    ItemState,
    UserState,
    fold_interaction,
    fold_item,
    item_deltas,
    stamp,
)
from tests.unit.training.data.helpers import T0, clicks, interactions
from training.data.offline_features import (
    item_stats_path,
    user_recent_path,
    write_feature_history,
)

KEEP = 3


def _events(table: pa.Table) -> list[Interaction]:
    return [
        Interaction(
            event_id=r["event_id"],
            event_time=r["event_time"],
            user_id=r["user_id"],
            item_id=r["item_id"],
            action=r["action"],
            source=r["source"],
        )
        for r in table.to_pylist()
    ]


def _click_events(table: pa.Table) -> list[Click]:
    return [
        Click(
            event_id=r["event_id"],
            event_time=r["event_time"],
            user_id=r["user_id"],
            request_id=r["request_id"],
            item_id=r["item_id"],
            rank=r["rank"],
        )
        for r in table.to_pylist()
    ]


def _worker_fold(
    batches: list[list[Interaction | Click]],
) -> tuple[dict[str, UserState], dict[str, ItemState]]:
    """What the agents in streams/agents.py do per batch, without Faust."""
    users: dict[str, UserState] = {}
    items: dict[str, ItemState] = {}
    for batch in batches:
        folded: list[Interaction | Click] = []
        changed: set[str] = set()
        for event in batch:
            if isinstance(event, Click):
                folded.append(event)
                continue
            state = users.setdefault(event.user_id, UserState())
            if fold_interaction(state, event, KEEP):
                changed.add(event.user_id)
                folded.append(event)
        for user_id in changed:
            stamp(users[user_id])
        for item_id, delta in item_deltas(folded).items():
            fold_item(items.setdefault(item_id, ItemState()), delta)
            stamp(items[item_id])
    return users, items


def _latest(path: Path, key: str) -> dict[str, dict[str, object]]:
    """The last row per entity of a feature history file (what the online store keeps)."""
    latest: dict[str, dict[str, object]] = {}
    for row in pq.read_table(path).to_pylist():
        latest[row[key]] = row
    return latest


LOG = interactions(
    [
        ("u1", "a", 0),
        ("u1", "b", 10),
        ("u2", "a", 10),
        ("u1", "c", 20, "purchase"),
        ("u1", "d", 20),  # same millisecond as c
        ("u2", "c", 30),
        ("u1", "e", 40),
        ("u3", "a", 50, "cart"),
    ]
)
CLICKS = clicks([("u2", "b", 15), ("u1", "a", 45)])


def test_history_rows_replay_the_worker_one_event_per_batch(tmp_path: Path) -> None:
    write_feature_history(tmp_path, LOG, CLICKS, keep=KEEP)
    merged = sorted(
        [*_events(LOG), *_click_events(CLICKS)],
        key=lambda e: (e.event_time, isinstance(e, Click)),
    )
    users: dict[str, UserState] = {}
    items: dict[str, ItemState] = {}
    user_rows_expected, item_rows_expected = [], []
    for event in merged:  # one event per batch: one row per state change, as offline
        u, i = _worker_fold_into(users, items, event)
        if u is not None:
            user_rows_expected.append(u)
        item_rows_expected.append(i)
    got_users = pq.read_table(user_recent_path(tmp_path)).to_pylist()
    got_items = pq.read_table(item_stats_path(tmp_path)).to_pylist()
    assert [_user_tuple(r) for r in got_users] == user_rows_expected
    assert [_item_tuple(r) for r in got_items] == item_rows_expected


def _worker_fold_into(
    users: dict[str, UserState], items: dict[str, ItemState], event: Interaction | Click
) -> tuple[tuple[object, ...] | None, tuple[object, ...]]:
    """One event as a batch of one, with the agents' steps; the rows it changes."""
    user_row = None
    if isinstance(event, Interaction):
        state = users.setdefault(event.user_id, UserState())
        assert fold_interaction(state, event, KEEP)
        stamp(state)
        user_row = (
            event.user_id,
            list(state.items),
            list(state.times),
            state.interaction_count,
            state.last_event_time,
            state.feature_time,
        )
    item = items.setdefault(event.item_id, ItemState())
    fold_item(item, item_deltas([event])[event.item_id])
    stamp(item)
    return user_row, (
        event.item_id,
        item.interaction_count,
        item.click_count,
        item.purchase_count,
        item.last_event_time,
        item.feature_time,
    )


def _ms(value: object) -> int:
    return int(value.timestamp() * 1000)  # type: ignore[attr-defined]


def _user_tuple(row: dict[str, object]) -> tuple[object, ...]:
    return (
        row["user_id"],
        row["recent_items"],
        row["recent_times"],
        row["interaction_count"],
        row["last_event_time"],
        _ms(row["event_timestamp"]),
    )


def _item_tuple(row: dict[str, object]) -> tuple[object, ...]:
    return (
        row["item_id"],
        row["interaction_count"],
        row["click_count"],
        row["purchase_count"],
        row["last_event_time"],
        _ms(row["event_timestamp"]),
    )


def test_final_state_equals_the_worker_in_any_arrival_order_and_batching(
    tmp_path: Path,
) -> None:
    """The online store (worker, arrival order, batches) and the offline history end equal."""
    write_feature_history(tmp_path, LOG, CLICKS, keep=KEEP)
    offline_users = _latest(user_recent_path(tmp_path), "user_id")
    offline_items = _latest(item_stats_path(tmp_path), "item_id")
    events: list[Interaction | Click] = [*_events(LOG), *_click_events(CLICKS)]
    for seed in range(5):
        arrival = events[:]
        random.Random(seed).shuffle(arrival)
        # a redelivered interaction (the worker does not de-duplicate clicks)
        arrival.insert(3, next(e for e in arrival if isinstance(e, Interaction)))
        size = 1 + seed
        users, items = _worker_fold([arrival[k : k + size] for k in range(0, len(arrival), size)])
        for user_id, state in users.items():
            row = offline_users[user_id]
            assert set(row["recent_items"]) == set(state.items)  # type: ignore[arg-type]
            assert row["recent_times"] == state.times
            assert row["interaction_count"] == state.interaction_count
            assert row["last_event_time"] == state.last_event_time
        for item_id, item in items.items():
            row = offline_items[item_id]
            assert (
                row["interaction_count"],
                row["click_count"],
                row["purchase_count"],
                row["last_event_time"],
            ) == (
                item.interaction_count,
                item.click_count,
                item.purchase_count,
                item.last_event_time,
            )
        assert set(users) == set(offline_users) and set(items) == set(offline_items)


def test_rows_never_hold_an_event_later_than_their_timestamp(tmp_path: Path) -> None:
    write_feature_history(tmp_path, LOG, CLICKS, keep=KEEP)
    for row in pq.read_table(user_recent_path(tmp_path)).to_pylist():
        stamp_ms = _ms(row["event_timestamp"])
        assert row["last_event_time"] <= stamp_ms
        assert all(t <= stamp_ms for t in row["recent_times"])
    for row in pq.read_table(item_stats_path(tmp_path)).to_pylist():
        assert row["last_event_time"] <= _ms(row["event_timestamp"])
    # two of u1's events share T0+20: the second row moves one millisecond forward
    u1 = [r for r in pq.read_table(user_recent_path(tmp_path)).to_pylist() if r["user_id"] == "u1"]
    assert [_ms(r["event_timestamp"]) - T0 for r in u1] == [0, 10, 20, 21, 40]


def test_chunked_writing_gives_the_same_file_in_row_groups(tmp_path: Path) -> None:
    rows = [(f"u{n % 7}", f"i{n % 11}", n) for n in range(200)]
    log = interactions(rows)
    write_feature_history(tmp_path / "small", log, keep=KEEP, chunk_rows=16)
    write_feature_history(tmp_path / "big", log, keep=KEEP, chunk_rows=100_000)
    for path in (user_recent_path, item_stats_path):
        small, big = path(tmp_path / "small"), path(tmp_path / "big")
        assert pq.ParquetFile(small).metadata.num_row_groups == 13  # ceil(200 / 16)
        assert pq.ParquetFile(big).metadata.num_row_groups == 1
        assert pq.read_table(small).equals(pq.read_table(big))
    assert not list((tmp_path / "small" / "features").glob(".*"))  # no temporary files left


def test_duplicate_event_ids_are_folded_once(tmp_path: Path) -> None:
    log = interactions([("u1", "a", 0), ("u1", "b", 5)])
    doubled = pa.concat_tables([log, log]).sort_by("event_time")
    report = write_feature_history(tmp_path, doubled, keep=KEEP)
    assert report.duplicates == 2 and report.user_rows == 2 and report.item_rows == 2


def test_archive_schema_starts_with_the_canonical_event_log_columns() -> None:
    canonical = [(f.name, f.type) for f in EVENTS_SCHEMA]
    assert [(f.name, f.type) for f in INTERACTION_SCHEMA][: len(canonical)] == canonical
