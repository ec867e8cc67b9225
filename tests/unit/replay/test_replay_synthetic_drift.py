"""Synthetic data with planted dynamics: known category switches and sessions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from replay.loading import SourceError
from replay.synthetic import SyntheticSource, parse_spec
from tests.unit.replay.test_replay_synthetic import generate, numbers

SPEC = "users=200,items=400,events=40000,seed=3,categories=8,switchers=0.5,session=6,drift=0"


def frame(source: SyntheticSource, table: pa.Table) -> pd.DataFrame:
    events = table.to_pandas()
    events["category"] = source.item_category[numbers(table.column("item_id"))]
    return events


def test_planted_switches_are_reproducible_and_recorded() -> None:
    source, table = generate(SPEC)
    again, same = generate(SPEC)
    assert table.equals(same)
    truth = source.planted_switches()
    assert truth is not None and truth.equals(again.planted_switches())
    assert truth.num_rows == 100  # half of the users
    rows = truth.to_pandas()
    assert (rows.from_category != rows.to_category).all()
    times = table.column("event_time").to_numpy()
    assert ((rows.switch_time > times[0]) & (rows.switch_time < times[-1])).all()
    other, _ = generate(SPEC.replace("seed=3", "seed=4"))
    assert not truth.equals(other.planted_switches())


def test_switchers_favour_one_category_before_and_the_other_after() -> None:
    source, table = generate(SPEC)
    events = frame(source, table)
    names = {f"category-{c:02d}": c for c in range(8)}
    checked = 0
    for row in source.planted_switches().to_pandas().itertuples():  # type: ignore[union-attr]
        mine = events[events.user_id == row.user_id]
        before = mine[mine.event_time < row.switch_time].category
        after = mine[mine.event_time >= row.switch_time].category
        if len(before) < 30 or len(after) < 30:
            continue
        checked += 1
        assert (
            before == names[row.from_category]
        ).mean() > 0.5  # 90 % of the sessions, in runs of 6
        assert (after == names[row.to_category]).mean() > 0.5  # 90 % of the sessions, in runs of 6
        assert (after == names[row.from_category]).mean() < 0.3
    assert checked >= 20


def test_sessions_are_runs_of_one_user_on_one_category() -> None:
    source, table = generate(SPEC)
    events = frame(source, table)
    same_user = (events.user_id.to_numpy()[1:] == events.user_id.to_numpy()[:-1]).mean()
    assert same_user > 0.7  # mean session of 6: 5 of 6 steps stay with the user
    runs = events.user_id.ne(events.user_id.shift()).cumsum()
    categories_per_run = events.groupby(runs).category.nunique()
    # Two sessions of one user back to back make a run of two categories: rare.
    assert (categories_per_run == 1).mean() > 0.95
    _, single = generate(SPEC.replace("session=6", "session=1"))
    users = single.column("user_id").to_numpy(zero_copy_only=False)
    assert (users[1:] == users[:-1]).mean() < 0.2
    times = table.column("event_time").to_numpy()
    assert (np.diff(times) > 0).all()


def test_defaults_leave_the_generator_as_it_was() -> None:
    source, table = generate("users=50,items=60,events=3000,seed=2")
    assert source.planted_switches() is None
    users = table.column("user_id").to_numpy(zero_copy_only=False)
    assert (users[1:] == users[:-1]).mean() < 0.2


@pytest.mark.parametrize("bad", ["switchers=1.5", "session=0.5", "switchers=0.5,categories=1"])
def test_bad_drift_parameters_are_refused(bad: str) -> None:
    with pytest.raises(SourceError):
        parse_spec(f"users=10,items=20,events=100,{bad}")


def test_prepare_writes_the_truth_beside_the_events(tmp_path: Path) -> None:
    from replay.prepare import prepare
    from streamrec.paths import dataset_switches
    from streamrec.settings import Settings

    settings = Settings(data_dir=tmp_path)
    prepare(settings, "synthetic:users=40,items=50,events=2000,seed=1,switchers=0.25")
    truth = pd.read_parquet(dataset_switches(tmp_path, "synthetic"))
    assert len(truth) == 10
    assert set(truth.columns) == {"user_id", "switch_time", "from_category", "to_category"}
    prepare(settings, "synthetic:users=40,items=50,events=2000,seed=1")
    assert not dataset_switches(tmp_path, "synthetic").exists()
