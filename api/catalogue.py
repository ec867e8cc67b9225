"""What the API learns from the prepared datasets: known items, their counts, titles and
the co-occurrence index of the heuristic. Blocking file I/O: call these from a worker thread.

Layout (written by `streamrec data prepare`, see ``streamrec.paths``):
``<datasets>/<name>/events.parquet`` (event_id, event_time, user_id, item_id, action,
rating), and optionally a catalogue ``<datasets>/<name>/items.parquet`` (item_id, title,
categories) beside it. Either may be a single file or a directory of Parquet parts.

The datasets, not the archive of the topics: the catalogue (titles, categories) exists only
there, and the heuristic's co-occurrence is a cold-start index of the history a shop ships
with. What users do live reaches recommendations through the online store, which the
worker folds from the topics, never through these files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow.compute as pc
import pyarrow.dataset as ds

from api.serving.heuristic import CooccurrenceIndex, build_cooccurrence
from streamrec.paths import EVENTS_FILE, ITEMS_FILE

logger = logging.getLogger(__name__)


# (path, modification time, size) of every file read: unchanged means no rebuild.
LogSignature = tuple[tuple[str, int, int], ...]


@dataclass(frozen=True)
class LogCatalogue:
    """Items known from the log and catalogue; cheap to build, so it comes first."""

    item_counts: dict[str, int] = field(default_factory=dict)
    titles: dict[str, str] = field(default_factory=dict)
    # Each item's categories, first the main one (MovieLens genres, Amazon's category path).
    categories: dict[str, tuple[str, ...]] = field(default_factory=dict)
    events: int = 0
    signature: LogSignature = ()


def log_files(log_dir: Path) -> tuple[list[Path], list[Path]]:
    """(event logs, catalogues) under ``log_dir``, in a stable order."""
    if not log_dir.is_dir():
        return [], []
    events = sorted(p for p in log_dir.glob(f"*/{EVENTS_FILE}"))
    items = sorted(p for p in log_dir.glob(f"*/{ITEMS_FILE}"))
    return events, items


def log_signature(log_dir: Path) -> LogSignature:
    events, items = log_files(log_dir)
    signature = []
    for root in events + items:
        files = [root] if root.is_file() else sorted(root.rglob("*.parquet"))
        for path in files:
            stat = path.stat()
            signature.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(signature)


def read_catalogue(log_dir: Path) -> LogCatalogue:
    signature = log_signature(log_dir)
    events, items = log_files(log_dir)
    counts: dict[str, int] = {}
    total = 0
    for path in events:
        table = ds.dataset(path, format="parquet").to_table(columns=["item_id"])
        total += table.num_rows
        grouped = table.group_by("item_id").aggregate([("item_id", "count")])
        for item_id, count in zip(
            grouped["item_id"].to_pylist(), grouped["item_id_count"].to_pylist(), strict=True
        ):
            counts[str(item_id)] = counts.get(str(item_id), 0) + int(count)
    titles: dict[str, str] = {}
    categories: dict[str, tuple[str, ...]] = {}
    for path in items:
        dataset = ds.dataset(path, format="parquet")
        if "categories" in dataset.schema.names:
            listed = dataset.to_table(columns=["item_id", "categories"])
            for item_id, names in zip(
                listed["item_id"].to_pylist(), listed["categories"].to_pylist(), strict=True
            ):
                if isinstance(names, list) and names:
                    categories[str(item_id)] = tuple(str(n) for n in names)
        if "title" not in dataset.schema.names:
            continue
        table = dataset.to_table(columns=["item_id", "title"])
        table = table.filter(pc.is_valid(table["title"]))
        for item_id, title in zip(
            table["item_id"].to_pylist(), table["title"].to_pylist(), strict=True
        ):
            titles[str(item_id)] = str(title)
            counts.setdefault(str(item_id), 0)
    return LogCatalogue(
        item_counts=counts,
        titles=titles,
        categories=categories,
        events=total,
        signature=signature,
    )


def read_cooccurrence(log_dir: Path, **options: int) -> CooccurrenceIndex:
    events, _ = log_files(log_dir)
    if not events:
        return CooccurrenceIndex()
    frames = []
    for number, path in enumerate(events):
        table = ds.dataset(path, format="parquet").to_table(
            columns=["user_id", "item_id", "event_time"]
        )
        frame = table.to_pandas()
        # Datasets number their users independently: keep user 1 of one log apart from
        # user 1 of another, or their sequences would be glued together.
        frame["user_id"] = f"{number}:" + frame["user_id"].astype(str)
        frame["item_id"] = frame["item_id"].astype(str)
        frames.append(frame)
    return build_cooccurrence(pd.concat(frames, ignore_index=True), **options)
