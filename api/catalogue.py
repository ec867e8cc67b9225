"""What the API learns from the prepared datasets: known items, their counts, titles, and
the events the baseline's co-occurrence counts. Blocking file I/O: call these from a worker
thread.

Layout (written by `streamrec data prepare`, see ``streamrec.paths``):
``<datasets>/<name>/events.parquet`` (event_id, event_time, user_id, item_id, action,
rating), and optionally a catalogue ``<datasets>/<name>/items.parquet`` (item_id, title,
categories) beside it. Either may be a single file or a directory of Parquet parts.

The catalogue (titles, categories) exists only in the datasets. The baseline's
co-occurrence counts the dataset events the stream has reached (``api.state``) and the
archive of the interactions topic (``read_archived_events``), which holds live events too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow.compute as pc
import pyarrow.dataset as ds

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


EVENT_COLUMNS = ["user_id", "item_id", "event_time"]


def read_events(log_dir: Path) -> pd.DataFrame:
    """(user_id, item_id, event_time) of every prepared dataset's events, ids as text."""
    events, _ = log_files(log_dir)
    return _read_frames(events)


def read_archived_events(folder: Path | None) -> pd.DataFrame:
    """The same columns from the archive of the interactions topic (empty when none)."""
    if folder is None or not folder.is_dir() or not any(folder.glob("*.parquet")):
        return _read_frames([])
    return _read_frames([folder])


def archive_signature(folder: Path | None) -> LogSignature:
    if folder is None or not folder.is_dir():
        return ()
    return tuple(
        (str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(folder.glob("*.parquet"))
    )


def _read_frames(paths: list[Path]) -> pd.DataFrame:
    frames = [
        ds.dataset(path, format="parquet").to_table(columns=EVENT_COLUMNS).to_pandas()
        for path in paths
    ]
    if not frames:
        return pd.DataFrame({"user_id": [], "item_id": [], "event_time": []}).astype(
            {"user_id": str, "item_id": str, "event_time": "int64"}
        )
    frame = pd.concat(frames, ignore_index=True)
    frame["user_id"] = frame["user_id"].astype(str)
    frame["item_id"] = frame["item_id"].astype(str)
    frame["event_time"] = frame["event_time"].astype("int64")
    return frame
