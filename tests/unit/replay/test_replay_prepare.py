"""`data prepare` end to end on the fixture files and on synthetic data."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from replay.dataset import EVENTS_SCHEMA, ITEMS_SCHEMA
from replay.loading import SourceError
from replay.prepare import prepare
from streamrec.settings import Settings
from streamrec.times import parse_time_ms


def test_grouplens_fixture(settings: Settings, fixtures: Path) -> None:
    report = prepare(settings, f"movielens-100k:{fixtures / 'movielens' / 'grouplens'}")
    assert report.name == "movielens-100k"
    assert (report.rows_read, report.malformed, report.written) == (12, 2, 10)
    events = pq.read_table(report.events_path)
    assert events.schema.equals(EVENTS_SCHEMA)
    times = events.column("event_time").to_pylist()
    assert times == sorted(times)
    assert set(events.column("action").to_pylist()) == {"rate"}
    items = pq.read_table(report.items_path)
    assert items.schema.equals(ITEMS_SCHEMA)
    # only the catalogue rows of items that are in the log
    assert sorted(items.column("item_id").to_pylist()) == ["242", "302", "377", "51"]
    saved = json.loads((Path(report.events_path).parent / "prepare.json").read_text())
    assert saved["written"] == 10


def test_recbole_fixture_drops_the_duplicate(settings: Settings, fixtures: Path) -> None:
    source = f"movielens-100k:{fixtures / 'movielens' / 'recbole'}"
    report = prepare(settings, source)
    assert (report.malformed, report.dropped_duplicates, report.written) == (2, 1, 9)
    kept = prepare(settings, source, dedupe=False)
    assert kept.written == 10


def test_event_ids_are_deterministic(settings: Settings, fixtures: Path) -> None:
    source = f"amazon-books:{fixtures / 'amazon' / 'reviews_2018.json'}"
    first = pq.read_table(prepare(settings, source).events_path)
    again = pq.read_table(prepare(settings, source).events_path)
    assert first.equals(again)
    ids = first.column("event_id").to_pylist()
    assert len(set(ids)) == len(ids)
    # an event keeps its id when other rows are filtered away
    filtered = pq.read_table(prepare(settings, source, min_rating=4).events_path)
    assert set(filtered.column("event_id").to_pylist()) < set(ids)


def test_amazon_cleaning_steps(settings: Settings, fixtures: Path) -> None:
    source = f"amazon-books:{fixtures / 'amazon' / 'reviews_2023.csv'}"
    report = prepare(
        settings,
        source,
        min_rating=2.0,
        since_ms=parse_time_ms("1588687848.923"),
        until_ms=parse_time_ms("1588688268.923"),
    )
    assert report.name == "amazon-books"
    assert report.malformed == 2
    assert report.dropped_min_rating == 2  # the two 1.0 ratings (rows 0 and 5)
    assert report.dropped_time_range == 2  # rows 1 (before since) and 9 (at until)
    assert report.written == 6
    assert report.items_path is None
    events = pq.read_table(report.events_path)
    assert min(events.column("rating").to_pylist()) >= 2.0
    assert min(events.column("event_time").to_pylist()) >= 1588687848923
    assert max(events.column("event_time").to_pylist()) < 1588688268923


def test_k_core_end_to_end(settings: Settings, tmp_path: Path) -> None:
    # k=2 needs three rounds: user d, then (c, z), then (c, x); a duplicate row of d
    # must not rescue d, so de-duplication has to come first.
    pairs = ["a,x", "a,y", "b,x", "b,y", "c,x", "c,z", "d,z", "d,z"]
    lines = ["user_id,parent_asin,rating,timestamp"] + [
        f"{pair},4.0,{1_600_000_000_000 + (n if n < 7 else 6) * 1000}"
        for n, pair in enumerate(pairs)
    ]
    reviews = tmp_path / "kcore.csv"
    reviews.write_text("\n".join(lines) + "\n")
    report = prepare(settings, f"amazon-books:{reviews}", k_core=2)
    assert report.dropped_duplicates == 1
    assert (report.dropped_k_core, report.k_core_rounds, report.written) == (3, 3, 4)
    events = pq.read_table(report.events_path).to_pandas()
    assert sorted(events["user_id"] + events["item_id"]) == ["ax", "ay", "bx", "by"]
    assert (report.users, report.items) == (2, 2)


def test_amazon_with_metadata_then_without(settings: Settings, fixtures: Path) -> None:
    reviews = fixtures / "amazon" / "reviews_2023.jsonl.gz"
    meta = fixtures / "amazon" / "meta_2023.jsonl"
    report = prepare(settings, f"amazon-books:{reviews},meta={meta}")
    assert report.catalogue_items == 2  # the duplicate listing and the unreviewed item go
    items = pq.read_table(report.items_path).to_pylist()
    assert items[1]["title"] == "Gardening for Beginners"
    report = prepare(settings, f"amazon-books:{reviews}")
    assert report.items_path is None
    assert not (Path(report.events_path).parent / "items.parquet").exists()


def test_synthetic_streams_and_matches_the_compact_path(settings: Settings) -> None:
    spec = "synthetic:users=50,items=30,events=70000,seed=2"
    streamed = prepare(settings, spec, chunk_rows=20_000)
    assert streamed.written == 70_000 and streamed.catalogue_items == 30
    events_file = pq.ParquetFile(streamed.events_path)
    assert events_file.metadata.num_row_groups == 4
    streamed_table = events_file.read()
    compacted = prepare(settings, spec, k_core=1, chunk_rows=20_000)  # k-core forces it
    assert compacted.written == 70_000
    assert pq.read_table(compacted.events_path).equals(streamed_table)


def test_synthetic_time_range(settings: Settings) -> None:
    report = prepare(
        settings,
        "synthetic:users=20,items=10,events=5000,seed=1,days=10",
        since_ms=parse_time_ms("2024-01-03T00:00:00Z"),
        until_ms=parse_time_ms("2024-01-05"),
    )
    assert report.first_event_ms is not None and report.last_event_ms is not None
    assert report.first_event_ms >= parse_time_ms("2024-01-03T00:00:00Z")
    assert report.last_event_ms < parse_time_ms("2024-01-05T00:00:00Z")
    assert 500 < report.written < 1500  # two days of ten
    assert report.dropped_time_range == 5000 - report.written


def test_bad_inputs(settings: Settings, fixtures: Path) -> None:
    with pytest.raises(SourceError, match="unknown source"):
        prepare(settings, "netflix-prize")
    with pytest.raises(SourceError, match="k-core"):
        prepare(settings, "synthetic:events=10", k_core=0)
    with pytest.raises(SourceError, match="before"):
        prepare(settings, "synthetic:events=10", since_ms=10, until_ms=5)
    with pytest.raises(SourceError, match="no such file"):
        prepare(settings, f"amazon-books:{fixtures / 'nope.json'}")
