"""Amazon Reviews loaders: 2018 JSON lines, 2023 JSONL (gzip), 2023 CSV, metadata."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from replay.amazon import CSV_2023, JSON_2018, JSON_2023, AmazonSource, detect_format
from replay.loading import LoadStats, SourceError
from replay.sources import open_source


def load(source: AmazonSource) -> tuple[pa.Table, LoadStats]:
    stats = LoadStats()
    return pa.concat_tables(source.batches(stats)), stats


def test_2018_json_lines(fixtures: Path) -> None:
    source = AmazonSource(fixtures / "amazon" / "reviews_2018.json")
    assert source.format == JSON_2018
    table, stats = load(source)
    assert (stats.rows_read, stats.malformed, table.num_rows) == (13, 2, 11)
    assert any(s.startswith("reviews_2018.json:7: not JSON") for s in stats.samples)
    assert any(s == "reviews_2018.json:10: missing field asin" for s in stats.samples)
    rows = table.to_pylist()
    assert rows[0] == {
        "row": 1,
        "event_time": 1_356_998_400_000,
        "user_id": "A2SUAM1J3GNN3B",
        "item_id": "0001048791",
        "action": "rate",
        "rating": 1.0,
    }
    # unixReviewTime is seconds; without it, reviewTime "09 12, 2013" is that UTC day
    date_only = next(r for r in rows if r["row"] == 4)
    assert date_only["event_time"] == 1_378_944_000_000


def test_2023_jsonl_gzip_with_milliseconds(fixtures: Path) -> None:
    source = AmazonSource(fixtures / "amazon" / "reviews_2023.jsonl.gz")
    assert source.format == JSON_2023
    table, stats = load(source)
    assert (stats.rows_read, stats.malformed, table.num_rows) == (12, 2, 10)
    assert any("seconds given as milliseconds" in s for s in stats.samples)
    first = table.to_pylist()[0]
    assert first["event_time"] == 1_588_687_728_923  # already ms: not multiplied
    assert first["item_id"] == "B100000000"  # parent_asin, not the variant asin
    assert first["user_id"] == "AE" + "0" * 26


def test_2023_csv(fixtures: Path) -> None:
    source = AmazonSource(fixtures / "amazon" / "reviews_2023.csv")
    assert source.format == CSV_2023
    table, stats = load(source)
    assert (stats.rows_read, stats.malformed, table.num_rows) == (12, 2, 10)
    assert stats.samples[0].startswith("reviews_2023.csv:5: bad value")
    assert stats.samples[1] == "reviews_2023.csv:9: 2 fields, want 4"
    assert table.column("rating").to_pylist()[:3] == [1.0, 2.0, 3.0]


def test_gzip_is_detected_by_content_not_name(fixtures: Path, tmp_path: Path) -> None:
    disguised = tmp_path / "reviews.csv"  # gzip behind a plain name
    with (
        (fixtures / "amazon" / "reviews_2023.csv").open("rb") as plain,
        gzip.open(disguised, "wb") as packed,
    ):
        shutil.copyfileobj(plain, packed)
    plain_table, _ = load(AmazonSource(fixtures / "amazon" / "reviews_2023.csv"))
    packed_table, _ = load(AmazonSource(disguised))
    assert packed_table.equals(plain_table)
    unpacked = tmp_path / "reviews.jsonl.gz"  # plain text behind a .gz name
    with gzip.open(fixtures / "amazon" / "reviews_2023.jsonl.gz", "rb") as packed_in:
        unpacked.write_bytes(packed_in.read())
    assert AmazonSource(unpacked).format == JSON_2023


def test_rows_come_in_bounded_chunks(fixtures: Path) -> None:
    source = AmazonSource(fixtures / "amazon" / "reviews_2018.json", chunk_rows=3)
    batches = source.batches(LoadStats())
    assert [b.num_rows for b in batches] == [3, 3, 3, 2]


def test_metadata_catalogue(fixtures: Path) -> None:
    source = open_source(
        f"amazon-books:{fixtures / 'amazon' / 'reviews_2023.jsonl.gz'}"
        f",meta={fixtures / 'amazon' / 'meta_2023.jsonl'}",
        fixtures,
    )
    items = source.catalogue()
    assert items is not None
    assert items.column("item_id").to_pylist()[:2] == ["B100000000", "B100000001"]
    assert items.to_pylist()[1]["categories"] == ["Books", "Crafts, Hobbies & Home"]
    assert source.meta_stats.malformed == 1  # type: ignore[attr-defined]


def test_no_catalogue_without_metadata(fixtures: Path) -> None:
    assert AmazonSource(fixtures / "amazon" / "reviews_2023.csv").catalogue() is None


def test_unknown_content_is_refused(tmp_path: Path) -> None:
    odd = tmp_path / "odd.json"
    odd.write_text('{"foo": 1}\n{"bar": 2}\n')
    with pytest.raises(SourceError, match="not an Amazon reviews file"):
        detect_format(odd)
    with pytest.raises(SourceError, match="no such file"):
        AmazonSource(tmp_path / "missing.json.gz")
    with pytest.raises(SourceError, match="needs a file"):
        open_source("amazon-books", tmp_path)


def test_csv_with_byte_order_mark(fixtures: Path, tmp_path: Path) -> None:
    exported = tmp_path / "export.csv"
    exported.write_bytes(b"\xef\xbb\xbf" + (fixtures / "amazon" / "reviews_2023.csv").read_bytes())
    table, stats = load(AmazonSource(exported))
    assert (table.num_rows, stats.malformed) == (10, 2)
