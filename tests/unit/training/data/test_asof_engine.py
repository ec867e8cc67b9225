"""The as-of engine returns exactly what Feast's ``get_historical_features`` returns."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from feast import FeatureStore

from streamrec.infra.feast_store import apply_definitions, open_store
from streamrec.settings import Settings
from tests.unit.training.data.helpers import T0, clicks, interactions
from training.data.datasets import (
    ENGINES,
    ITEM_FEATURES,
    USER_FEATURES,
    asof_features,
    build_examples,
    epoch_ms,
    feature_column,
    historical_features,
)
from training.data.examples import STAGE_ITEM_FEATURES, STAGE_USER_FEATURES, FeatureHistory, lookup
from training.data.offline_features import item_stats_path, user_recent_path, write_feature_history


@pytest.fixture
def store(tmp_path: Path) -> FeatureStore:
    settings = Settings(redis_url="none", data_dir=tmp_path / "data", state_dir=tmp_path / "state")
    feature_store = open_store(settings)
    apply_definitions(feature_store)
    return feature_store


def _repo(store: FeatureStore) -> Path:
    return Path(str(store.config.repo_path))


def _both(store: FeatureStore, examples: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    repo = _repo(store)
    feast = historical_features(store, examples)
    asof = asof_features(examples, user_recent_path(repo), item_stats_path(repo))
    return feast, asof


def _normalized(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for column in out.columns:
        if column.endswith(("recent_items", "recent_times")):
            out[column] = [list(value) for value in out[column]]
    return out


def test_asof_equals_feast_on_a_sample_with_clicks_ties_and_unknown_entities(
    store: FeatureStore,
) -> None:
    # Two events in one millisecond (n=10, 11), clicks between interactions, repeat items.
    rows = [(f"u{n % 4}", f"i{(n * 5) % 7}", n * 3 if n != 11 else 30) for n in range(40)]
    log = interactions(rows)
    click_log = clicks([("u1", "i2", 7), ("u2", "i3", 31), ("u0", "i2", 95)])
    write_feature_history(_repo(store), log, click_log, keep=5)
    examples = build_examples(log, negatives=2, seed=1)
    extra = pd.DataFrame(
        {
            "user_id": ["u9", "u1", "u2", "u3"],  # u9 never seen: no row in either engine
            "item_id": ["i1", "i99", "i3", "i0"],
            "event_time": [T0 + 50, T0 + 50, T0 + 31, T0 + 10_000],
            "label": [0, 0, 0, 0],
            "event_id": ["x1", "x2", "x3", "x4"],
        }
    )
    examples = pd.concat([examples, extra], ignore_index=True)
    feast, asof = _both(store, examples)
    assert len(feast) == len(examples)
    assert feast["item_stats__trend_score"].gt(0).any()
    assert feast["item_stats__click_count"].gt(0).any()
    pd.testing.assert_frame_equal(_normalized(feast), _normalized(asof))


def test_asof_is_strictly_before_the_example_time(store: FeatureStore) -> None:
    log = interactions([("u1", "a", 0), ("u1", "b", 10), ("u2", "b", 10)])
    write_feature_history(_repo(store), log, keep=5)
    repo = _repo(store)
    examples = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u1"],
            "item_id": ["b", "b", "b"],
            "event_time": [T0 + t for t in (10, 11, 0)],
        }
    )
    got = asof_features(examples, user_recent_path(repo), item_stats_path(repo))
    assert [list(v) for v in got["user_recent__recent_items"]] == [["a"], ["b", "a"], []]
    # Item b's two events share a millisecond: the second row is stamped one ms later (the
    # worker's rule), so at T0 + 11 the lookup (T0 + 10) sees only the first of them.
    assert list(got["item_stats__interaction_count"]) == [0, 1, 0]


def test_engines_are_named() -> None:
    assert ENGINES == ("feast", "asof")


@pytest.mark.parametrize("engine", ENGINES)
def test_the_stages_lookup_reads_their_features_as_the_full_lookup_has_them(
    store: FeatureStore, engine: str
) -> None:
    """The stages look up only what they read (the history, the context features): the
    same values as in the service's full feature rows, lists as Python lists."""
    assert set(STAGE_USER_FEATURES) <= set(USER_FEATURES)
    assert set(STAGE_ITEM_FEATURES) <= set(ITEM_FEATURES)
    rows = [(f"u{n % 4}", f"i{(n * 5) % 7}", n * 3) for n in range(40)]
    log = interactions(rows)
    repo = _repo(store)
    write_feature_history(repo, log, clicks([("u1", "i2", 7)]), keep=5)
    users, items = pd.read_parquet(user_recent_path(repo)), pd.read_parquet(item_stats_path(repo))
    for table in (users, items):
        table["event_timestamp"] = epoch_ms(table["event_timestamp"])
    history = FeatureHistory(users, items, repo)
    examples = build_examples(log, negatives=2, seed=1)[["user_id", "item_id", "event_time"]]
    full = lookup(
        examples, history, engine, user_features=USER_FEATURES, item_features=ITEM_FEATURES
    )
    staged = lookup(examples, history, engine)
    columns = [feature_column(ref) for ref in (*STAGE_USER_FEATURES, *STAGE_ITEM_FEATURES)]
    assert list(staged.columns) == ["user_id", "item_id", "event_time", *columns]
    pd.testing.assert_frame_equal(staged[columns], full[columns])
    recent = staged["user_recent__recent_items"]
    assert all(isinstance(value, list) for value in recent) and any(len(v) > 1 for v in recent)
    assert "user_recent__recent_times" in full and "user_recent__recent_times" not in staged
