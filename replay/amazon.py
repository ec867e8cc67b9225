"""Amazon Reviews (Books): the 2018 5-core JSON lines, the 2023 JSONL and the 2023 CSV.

The format is recognised from the content (a JSON object per line or a CSV header), and
gzip from its magic bytes, so renamed or re-compressed files still load. Files are read
one line at a time: the 2018 ``Books_5.json.gz`` alone is 27M reviews and ~9 GB of text.
A line that does not parse, or lacks a field, is counted and skipped.

2018 records carry ``unixReviewTime`` in *seconds*; 2023 records carry ``timestamp`` in
*milliseconds*. Mixing them up is the classic mistake, so each format converts explicitly
and the row buffer refuses times outside 1990..2100.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from replay.dataset import ITEMS_SCHEMA
from replay.loading import (
    DEFAULT_CHUNK_ROWS,
    LoadStats,
    RowBuffer,
    SourceError,
    open_text,
    parse_float,
)

NAME = "amazon-books"
JSON_2018 = "2018-json"
JSON_2023 = "2023-jsonl"
CSV_2023 = "2023-csv"
# How far into a file to look for a line that tells the format.
SNIFF_LINES = 100


def detect_format(path: Path) -> str:
    """One of JSON_2018, JSON_2023, CSV_2023, from the first lines of the file."""
    with open_text(path) as lines:
        for _, line in zip(range(SNIFF_LINES), lines, strict=False):
            text = line.strip()
            if not text:
                continue
            if text.startswith("{"):
                try:
                    record = json.loads(text)
                except json.JSONDecodeError:
                    continue  # a malformed first line must not hide the format
                if isinstance(record, dict) and "reviewerID" in record:
                    return JSON_2018
                if isinstance(record, dict) and "user_id" in record:
                    return JSON_2023
                continue
            header = [name.strip() for name in text.split(",")]
            if {"user_id", "rating", "timestamp"} <= set(header) and (
                "parent_asin" in header or "asin" in header
            ):
                return CSV_2023
            break
    raise SourceError(
        f"{path}: not an Amazon reviews file this loader knows (2018 5-core JSON lines "
        "with reviewerID/asin/overall/unixReviewTime, 2023 JSONL with user_id/parent_asin/"
        "rating/timestamp, or 2023 CSV with header user_id,parent_asin,rating,timestamp)"
    )


@dataclass
class AmazonSource:
    """Amazon reviews from one file, with an optional metadata file as the catalogue."""

    path: Path
    meta_path: Path | None = None
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    name: str = NAME
    sorted_by_time: bool = False
    format: str = field(init=False, default="")
    meta_stats: LoadStats = field(init=False, default_factory=LoadStats)

    def __post_init__(self) -> None:
        self.format = detect_format(self.path)
        if self.meta_path is not None and not Path(self.meta_path).is_file():
            raise SourceError(f"{self.meta_path}: no such metadata file")

    def batches(self, stats: LoadStats) -> Iterator[pa.Table]:
        if self.format == CSV_2023:
            yield from _csv_reviews(self.path, stats, self.chunk_rows)
        else:
            yield from _json_reviews(self.path, stats, self.chunk_rows)

    def catalogue(self) -> pa.Table | None:
        if self.meta_path is None:
            return None
        return _meta_items(Path(self.meta_path), self.meta_stats)


def _json_reviews(path: Path, stats: LoadStats, chunk_rows: int) -> Iterator[pa.Table]:
    buffer = RowBuffer(stats, chunk_rows)
    with open_text(path) as lines:
        for number, line in enumerate(lines, start=1):
            text = line.strip()
            if not text:
                continue
            stats.rows_read += 1
            where = f"{path.name}:{number}"
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                stats.reject(where, f"not JSON ({exc.msg} at column {exc.colno})")
                continue
            if not isinstance(record, dict):
                stats.reject(where, f"a JSON {type(record).__name__}, not an object")
                continue
            try:
                user, item, rating, time_ms = _review_fields(record)
            except (KeyError, TypeError, ValueError) as exc:
                stats.reject(where, _reason(exc))
                continue
            buffer.add(where, number, user, item, time_ms, rating)
            if buffer.full():
                yield buffer.take()
    if len(buffer):
        yield buffer.take()


def _review_fields(record: dict[str, Any]) -> tuple[Any, Any, float, int]:
    """(user, item, rating, time ms) of a 2018 or a 2023 review record."""
    if "reviewerID" in record:
        user, item = record["reviewerID"], record["asin"]
        rating = _number(record["overall"])
        if record.get("unixReviewTime") is not None:
            time_ms = int(_number(record["unixReviewTime"])) * 1000
        elif record.get("reviewTime"):
            # "09 12, 2013": month day, year; the day's start in UTC is all it tells.
            day = datetime.strptime(str(record["reviewTime"]).strip(), "%m %d, %Y")
            time_ms = int(day.replace(tzinfo=UTC).timestamp()) * 1000
        else:
            raise KeyError("unixReviewTime")
        return user, item, rating, time_ms
    user = record["user_id"]
    item = record.get("parent_asin") or record["asin"]
    return user, item, _number(record["rating"]), int(_number(record["timestamp"]))


def _number(value: Any) -> float:
    kind = type(value)
    if kind is float or kind is int:  # the common case, checked first: 27M rows
        number = float(value)
        if math.isfinite(number):
            return number
        raise ValueError(f"{value!r} is not a finite number")
    if kind is str:
        return parse_float(value)
    raise TypeError(f"{value!r} is not a number")


def _reason(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"missing field {exc.args[0]}"
    return f"bad value: {exc}"


def _csv_reviews(path: Path, stats: LoadStats, chunk_rows: int) -> Iterator[pa.Table]:
    buffer = RowBuffer(stats, chunk_rows)
    with open_text(path) as handle:
        reader = csv.reader(handle)
        header = [name.strip() for name in next(reader)]
        item_name = "parent_asin" if "parent_asin" in header else "asin"
        cols = [header.index(n) for n in ("user_id", item_name, "rating", "timestamp")]
        width = max(cols) + 1
        for fields in reader:
            number = reader.line_num
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue
            stats.rows_read += 1
            where = f"{path.name}:{number}"
            if len(fields) < width:
                stats.reject(where, f"{len(fields)} fields, want {width}")
                continue
            user, item, rating_text, time_text = (fields[c] for c in cols)
            try:
                rating = parse_float(rating_text)
                time_ms = int(parse_float(time_text))
            except ValueError as exc:
                stats.reject(where, f"bad value: {exc}")
                continue
            buffer.add(where, number, user, item, time_ms, rating)
            if buffer.full():
                yield buffer.take()
    if len(buffer):
        yield buffer.take()


def _meta_items(path: Path, stats: LoadStats, chunk_rows: int = 200_000) -> pa.Table:
    """Catalogue from a 2018 (``asin``, ``category``) or 2023 (``parent_asin``,
    ``categories``) metadata JSON lines file, built in Arrow chunks."""
    chunks: list[pa.Table] = []
    ids: list[str] = []
    titles: list[str | None] = []
    categories: list[list[str]] = []
    with open_text(path) as lines:
        for number, line in enumerate(lines, start=1):
            text = line.strip()
            if not text:
                continue
            stats.rows_read += 1
            try:
                record = json.loads(text)
                item = record.get("parent_asin") or record["asin"]
            except (json.JSONDecodeError, AttributeError, KeyError) as exc:
                stats.reject(f"{path.name}:{number}", _reason(exc))
                continue
            raw_categories = record.get("categories") or record.get("category") or []
            if not isinstance(raw_categories, list):
                raw_categories = [raw_categories]
            ids.append(str(item))
            title = record.get("title")
            titles.append(str(title) if title else None)
            categories.append([str(c) for c in raw_categories if c])
            if len(ids) >= chunk_rows:
                chunks.append(pa.table([ids, titles, categories], schema=ITEMS_SCHEMA))
                ids, titles, categories = [], [], []
    chunks.append(pa.table([ids, titles, categories], schema=ITEMS_SCHEMA))
    return pa.concat_tables(chunks)
