"""Offline history of the join features: the same counts as the worker's join, and rows
that never hold an impression or click later than their timestamp."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streams.archiver import CLICK_SCHEMA, RECOMMENDATION_SCHEMA
from streams.events import Click, RecommendationServed, RecommendedItem
from streams.folding import ItemState, fold_item_entries, group_entries
from streams.joins import ATTRIBUTION_WINDOW_MS, CLOCK_SKEW_MS, RequestJoin
from tests.unit.training.data.helpers import T0, interactions
from training.data.offline_features import (
    item_stats_path,
    user_recent_path,
    write_feature_history,
)

# request id -> (served at, items); clicks as (request id, item, at)
SERVED = {
    "r1": (100, ["a", "b", "c"]),
    "r2": (200, ["b", "d"]),
    "r3": (300, ["a"]),
}
CLICKS = [
    ("r1", "b", 150),  # attributed
    ("r1", "b", 160),  # a second click on the same impression: not counted again
    ("r1", "z", 170),  # not served in r1
    ("r2", "d", 200 - CLOCK_SKEW_MS // 2),  # a client clock slightly behind: attributed
    ("r3", "a", 300 + ATTRIBUTION_WINDOW_MS + 1),  # too late
    ("gone", "a", 400),  # its request was never served
]


def _served_events() -> list[RecommendationServed]:
    return [
        RecommendationServed(
            event_id=f"s-{rid}",
            user_id="u",
            request_id=rid,
            variant="v",
            model_version="m",
            event_time=T0 + at,
            items=tuple(
                RecommendedItem(item_id=i, rank=k, score=0.5, reason="x")
                for k, i in enumerate(items, start=1)
            ),
        )
        for rid, (at, items) in SERVED.items()
    ]


def _click_events() -> list[Click]:
    return [
        Click(event_id=f"c{n}", user_id="u", request_id=rid, item_id=i, rank=1, event_time=T0 + at)
        for n, (rid, i, at) in enumerate(CLICKS)
    ]


def _tables() -> tuple[pa.Table, pa.Table]:
    served = pa.Table.from_pylist(
        [
            {
                **e.model_dump(mode="json", by_alias=False, exclude={"schema_version"}),
                "kafka_partition": 0,
                "kafka_offset": n,
            }
            for n, e in enumerate(_served_events())
        ],
        schema=RECOMMENDATION_SCHEMA,
    ).sort_by("event_time")
    clicks = pa.Table.from_pylist(
        [
            {
                **e.model_dump(mode="json", by_alias=False, exclude={"schema_version"}),
                "kafka_partition": 0,
                "kafka_offset": n,
            }
            for n, e in enumerate(_click_events())
        ],
        schema=CLICK_SCHEMA,
    ).sort_by("event_time")
    return served, clicks


def test_offline_join_counts_equal_the_worker_join_in_any_arrival_order(tmp_path: Path) -> None:
    served, clicks = _tables()
    log = interactions([("u", "a", 50), ("u", "b", 120)])
    report = write_feature_history(tmp_path, log, clicks, served, keep=5)
    assert report.recommendations == 3
    latest: dict[str, dict[str, object]] = {}
    for row in pq.read_table(item_stats_path(tmp_path)).to_pylist():
        latest[row["item_id"]] = row
    offline = {
        i: (r["impression_count"], r["attributed_click_count"])
        for i, r in latest.items()
        if r["impression_count"]
    }
    assert offline == {"a": (2, 0), "b": (2, 1), "c": (1, 0), "d": (1, 1)}
    assert latest["b"]["attributed_ctr"] == (1 + 1) / (2 + 20)
    assert latest["z"]["impression_count"] == 0 and latest["z"]["click_count"] == 1

    events: list[tuple[str, int, RecommendationServed | Click]] = [
        ("recs:0", n, e) for n, e in enumerate(_served_events())
    ] + [("clicks:0", n, e) for n, e in enumerate(_click_events())]
    for seed in range(8):
        # each topic in its own offset order ...
        topics = {name: [e for e in events if e[0] == name] for name in ("recs:0", "clicks:0")}
        rng, join, sent = random.Random(seed), RequestJoin(), []
        while topics["recs:0"] or topics["clicks:0"]:  # ... interleaved at random
            names = [name for name, left in topics.items() if left]
            source, offset, event = topics[rng.choice(names)].pop(0)
            sent += join.fold(event, source, 0, offset)
        items: dict[str, ItemState] = {}
        for message in group_entries(sent):
            fold_item_entries(items.setdefault(message.item_id, ItemState()), message)
        assert {
            i: (s.impression_count, s.attributed_click_count) for i, s in items.items()
        } == offline


def test_rows_never_hold_a_joined_event_later_than_their_timestamp(tmp_path: Path) -> None:
    served, clicks = _tables()
    write_feature_history(tmp_path, interactions([("u", "a", 0)]), clicks, served, keep=5)
    rows = pq.read_table(item_stats_path(tmp_path)).to_pylist()
    stamp_of = {id(r): int(r["event_timestamp"].timestamp() * 1000) for r in rows}
    seen_impressions: dict[str, int] = {}
    for row in rows:
        item, stamp_ms = row["item_id"], stamp_of[id(row)]
        if row["impression_count"] > seen_impressions.get(item, 0):
            # every request serving this item so far was served at or before this row
            served_at = sorted(T0 + at for at, items in SERVED.values() if item in items)
            assert served_at[row["impression_count"] - 1] <= stamp_ms
            seen_impressions[item] = row["impression_count"]


def test_each_side_folded_alone_writes_what_both_together_write(tmp_path: Path) -> None:
    """`prepare` folds the user and the item side in two processes: each alone must give
    the same rows, a repeated event skipped on both (the item side tells it by the users'
    states it keeps without writing them)."""
    served, clicks = _tables()
    log = interactions([("u", "a", 50), ("u", "a", 50), ("v", "b", 60), ("u", "b", 120)])
    both = write_feature_history(tmp_path / "both", log, clicks, served, keep=5)
    items = write_feature_history(tmp_path / "items", log, clicks, served, keep=5, sides=["items"])
    users = write_feature_history(tmp_path / "users", log, clicks, served, keep=5, sides=["users"])
    assert both.duplicates == items.duplicates == users.duplicates == 1
    assert (items.item_rows, users.user_rows) == (both.item_rows, both.user_rows)
    assert pq.read_table(item_stats_path(tmp_path / "items")).equals(
        pq.read_table(item_stats_path(tmp_path / "both"))
    )
    assert pq.read_table(user_recent_path(tmp_path / "users")).equals(
        pq.read_table(user_recent_path(tmp_path / "both"))
    )
    assert not user_recent_path(tmp_path / "items").exists()
    assert not item_stats_path(tmp_path / "users").exists()
    with pytest.raises(ValueError, match="sides must be among"):
        write_feature_history(tmp_path / "x", log, keep=5, sides=["user"])
