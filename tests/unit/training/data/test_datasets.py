"""Point-in-time training sets through a local Feast store (SQLite online, files offline)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from feast import FeatureStore

from streamrec.infra.feast_store import apply_definitions, open_store
from streamrec.settings import Settings
from tests.unit.training.data.helpers import T0, interactions
from training.data.datasets import build_examples, historical_features
from training.data.offline_features import write_feature_history

KEEP = 5
BASE = [
    ("u1", "a", 0),
    ("u2", "a", 5),
    ("u1", "b", 10),
    ("u2", "b", 15),
    ("u1", "c", 20, "purchase"),
    ("u3", "d", 25),
    ("u1", "d", 30),
]


@pytest.fixture
def store(tmp_path: Path) -> FeatureStore:
    settings = Settings(redis_url="none", data_dir=tmp_path / "data", state_dir=tmp_path / "state")
    feature_store = open_store(settings)
    apply_definitions(feature_store)
    return feature_store


def _training_set(
    store: FeatureStore, log: pa.Table, examples: pd.DataFrame, **kwargs: int
) -> pd.DataFrame:
    write_feature_history(Path(store.config.repo_path), log, keep=KEEP)
    return historical_features(store, examples, **kwargs)


def _example(user: str, item: str, t: int) -> dict[str, object]:
    return {"user_id": user, "item_id": item, "event_time": T0 + t}


def test_features_are_those_strictly_before_the_example(store: FeatureStore) -> None:
    examples = pd.DataFrame(
        [
            _example("u1", "c", 20),  # u1's own event at 20 must not be in its features
            _example("u1", "c", 21),  # one ms later it is
            _example("u9", "zz", 20),  # no history at all
        ]
    )
    got = _training_set(store, interactions(BASE), examples)
    assert list(got["user_id"]) == ["u1", "u1", "u9"]  # the examples' order is kept
    first, later, unknown = got.to_dict("records")
    assert first["user_recent__recent_items"] == ["b", "a"]
    assert first["user_recent__interaction_count"] == 2
    assert first["item_stats__interaction_count"] == 0
    assert first["item_stats__purchase_count"] == 0
    assert later["user_recent__recent_items"] == ["c", "b", "a"]
    assert later["item_stats__purchase_count"] == 1
    assert unknown["user_recent__recent_items"] == []
    assert unknown["user_recent__interaction_count"] == 0
    assert got["item_stats__interaction_count"].dtype == "int64"


def test_positive_and_negatives_at_the_same_time_all_keep_their_rows(
    store: FeatureStore,
) -> None:
    """Feast's Dask store de-duplicates on (keys so far, timestamp); one call per view
    on unique lookups keeps every example."""
    examples = pd.DataFrame(
        [_example("u1", "d", 30), _example("u1", "a", 30), _example("u1", "zz", 30)]
    )
    got = _training_set(store, interactions(BASE), examples)
    assert len(got) == 3
    assert list(got["item_id"]) == ["d", "a", "zz"]
    assert list(got["item_stats__interaction_count"]) == [1, 2, 0]
    assert all(items == ["c", "b", "a"] for items in got["user_recent__recent_items"])


def test_an_event_after_the_example_does_not_change_its_features(store: FeatureStore) -> None:
    """THE leak test: rebuild the history with a later event; the set is identical."""
    examples = build_examples(interactions(BASE), negatives=2, seed=1)
    before = _training_set(store, interactions(BASE), examples)
    last = int(examples["event_time"].max()) - T0
    later = [
        ("u1", "a", last),  # same millisecond as the last examples: still not visible
        ("u1", "e", last + 1),
        ("u2", "d", last + 5, "purchase"),
    ]
    after = _training_set(store, interactions(BASE + later), examples)
    pd.testing.assert_frame_equal(before, after)


def test_an_event_before_the_example_does_change_its_features(store: FeatureStore) -> None:
    examples = pd.DataFrame([_example("u1", "d", 30), _example("u2", "c", 30)])
    before = _training_set(store, interactions(BASE), examples)
    after = _training_set(store, interactions([*BASE, ("u1", "e", 29), ("u4", "c", 28)]), examples)
    assert before.loc[0, "user_recent__recent_items"] == ["c", "b", "a"]
    assert after.loc[0, "user_recent__recent_items"] == ["e", "c", "b", "a"]
    assert (
        after.loc[1, "item_stats__interaction_count"]
        == before.loc[1, "item_stats__interaction_count"] + 1
    )


def test_chunked_lookups_give_the_same_set(store: FeatureStore) -> None:
    log = interactions([(f"u{n % 4}", f"i{n % 6}", n * 3) for n in range(40)])
    examples = build_examples(log, negatives=2, seed=0)
    whole = _training_set(store, log, examples, max_join_rows=10_000_000)
    chunked = _training_set(store, log, examples, max_join_rows=25)
    pd.testing.assert_frame_equal(whole, chunked)


def test_examples_are_seeded_and_negatives_are_past_unseen_items() -> None:
    log = interactions([(f"u{n % 5}", f"i{(n * 7) % 13}", n) for n in range(120)])
    first = build_examples(log, negatives=3, seed=7)
    assert first.equals(build_examples(log, negatives=3, seed=7))
    assert not first.equals(build_examples(log, negatives=3, seed=8))
    positives = first[first["label"] == 1]
    assert len(positives) == log.num_rows
    frame = log.to_pandas()
    first_seen = frame.groupby("item_id")["event_time"].min()
    for row in first[first["label"] == 0].itertuples():
        history = frame[(frame.user_id == row.user_id) & (frame.event_time <= row.event_time)]
        assert row.item_id not in set(history.item_id)
        assert first_seen[row.item_id] < row.event_time
    per_positive = first[first["label"] == 0].groupby("event_id").size()
    assert per_positive.max() <= 3
    assert not first.duplicated(["event_id", "item_id"]).any()
