"""Synthetic data: determinism, Zipf popularity, category drift, chunked writing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from replay.loading import LoadStats, SourceError
from replay.synthetic import (
    BLOCK_ROWS,
    SyntheticSource,
    SyntheticSpec,
    parse_spec,
    write_synthetic_events,
)
from streams.events import ACTIONS


def generate(spec: str) -> tuple[SyntheticSource, pa.Table]:
    source = SyntheticSource(parse_spec(spec))
    return source, pa.concat_tables(source.batches(LoadStats()))


def numbers(column: pa.ChunkedArray) -> np.ndarray:
    """ "u12" -> 12."""
    return np.array([int(text[1:]) for text in column.to_pylist()])


def test_spec_parsing() -> None:
    assert parse_spec("users=10,items=5,events=1e3,seed=7") == SyntheticSpec(
        users=10, items=5, events=1000, seed=7
    )
    assert parse_spec("").events == SyntheticSpec().events
    assert parse_spec("drift=0.25,events=10_000").drift == 0.25
    for bad in ("users=0", "users=ten", "colour=red", "events=1.5", "drift=2", "users"):
        with pytest.raises(SourceError):
            parse_spec(bad)


def test_same_seed_same_data_other_seed_other_data() -> None:
    _, first = generate("users=50,items=40,events=5000,seed=3")
    _, again = generate("users=50,items=40,events=5000,seed=3")
    _, other = generate("users=50,items=40,events=5000,seed=4")
    assert first.equals(again)
    assert not first.column("item_id").equals(other.column("item_id"))


def test_events_are_time_ordered_and_valid() -> None:
    source, table = generate(f"users=30,items=20,events={BLOCK_ROWS + 500},seed=1,days=2")
    times = table.column("event_time").to_numpy()
    assert (np.diff(times) > 0).all()  # strictly increasing, across blocks too
    assert times[-1] - times[0] == pytest.approx(2 * 86_400_000, rel=0.05)
    assert table.column("row").to_pylist() == list(range(table.num_rows))
    assert set(table.column("action").to_pylist()) <= set(ACTIONS)
    assert table.column("rating").null_count == table.num_rows
    assert numbers(table.column("user_id")).max() < 30
    catalogue = source.catalogue()
    assert catalogue.num_rows == 20
    assert all(len(c) == 1 for c in catalogue.column("categories").to_pylist())


def test_item_popularity_follows_a_power_law() -> None:
    _, table = generate("users=200,items=2000,events=100000,seed=1")
    counts = np.sort(np.bincount(numbers(table.column("item_id")), minlength=2000))[::-1]
    ranks = np.arange(1, counts.size + 1)
    slope = np.polyfit(np.log(ranks[4:200]), np.log(counts[4:200]), 1)[0]
    assert -1.25 < slope < -0.75  # Zipf exponent 1
    assert counts[:200].sum() / counts.sum() > 0.6  # top 10% of items: most of the events
    _, flat = generate("users=200,items=2000,events=100000,seed=1,zipf=0")
    flat_counts = np.sort(np.bincount(numbers(flat.column("item_id")), minlength=2000))[::-1]
    assert flat_counts[:200].sum() / flat_counts.sum() < 0.2


def interest_shift(spec: str) -> float:
    """Mean over users of the distance between their early and late category mixes."""
    source, table = generate(spec)
    users = numbers(table.column("user_id"))
    categories = source.item_category[numbers(table.column("item_id"))]
    n_cat = categories.max() + 1
    shifts = []
    for user in np.unique(users):
        seen = categories[users == user]
        quarter = seen.size // 4
        if quarter < 25:
            continue
        early = np.bincount(seen[:quarter], minlength=n_cat) / quarter
        late = np.bincount(seen[-quarter:], minlength=n_cat) / quarter
        shifts.append(0.5 * np.abs(early - late).sum())
    assert len(shifts) > 50
    return float(np.mean(shifts))


def test_user_interests_drift_over_time() -> None:
    base = "users=100,items=1000,events=60000,seed=5"
    steady = interest_shift(base + ",drift=0")
    drifting = interest_shift(base + ",drift=1")
    assert steady < 0.2
    assert drifting > steady + 0.2


def test_chunked_writing_does_not_change_the_data(tmp_path: Path) -> None:
    spec = parse_spec("users=100,items=50,events=150000,seed=9")
    small = tmp_path / "small.parquet"
    large = tmp_path / "large.parquet"
    assert write_synthetic_events(small, spec, chunk_rows=40_000) == 150_000
    assert write_synthetic_events(large, spec, chunk_rows=500_000) == 150_000
    small_file = pq.ParquetFile(small)
    assert small_file.metadata.num_row_groups == 4
    assert [small_file.metadata.row_group(i).num_rows for i in range(4)] == [
        40_000,
        40_000,
        40_000,
        30_000,
    ]
    assert pq.ParquetFile(large).metadata.num_row_groups == 1
    assert pq.read_table(small).equals(pq.read_table(large))


def test_generation_is_lazy_and_block_sized() -> None:
    source = SyntheticSource(parse_spec("users=10,items=10,events=10000000,seed=0"))
    stats = LoadStats()
    batches = source.batches(stats)
    first = next(batches)
    assert first.num_rows == BLOCK_ROWS
    assert stats.rows_read == BLOCK_ROWS  # nothing beyond the first block was made
