"""The background replay's speed, and the load test's memo line and order of systems."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench.background import speed_for_rate
from bench.load_test import in_turn, memo_line
from streamrec.paths import dataset_events


def test_the_speed_averages_the_asked_rate(tmp_path: Path) -> None:
    path = dataset_events(tmp_path, "tiny")
    path.parent.mkdir(parents=True, exist_ok=True)
    # 100 events over 1,000 s of event time: 0.1 events/s at real time.
    times = [1_000_000 + n * 10_101 for n in range(100)]
    pq.write_table(pa.table({"event_time": pa.array(times, pa.int64())}), path)
    assert speed_for_rate(tmp_path, "tiny", 50) == pytest.approx(500, rel=1e-3)


def test_a_log_without_a_span_is_refused(tmp_path: Path) -> None:
    path = dataset_events(tmp_path, "flat")
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"event_time": pa.array([5, 5], pa.int64())}), path)
    with pytest.raises(SystemExit, match="spans no time"):
        speed_for_rate(tmp_path, "flat", 10)


def test_the_memo_line_counts_only_the_run() -> None:
    assert memo_line((10, 5), (40, 15)) == "  kept lists (memo): 75% of 40"
    assert memo_line((1, 1), (1, 1)) == "  kept lists (memo): n/a of 0"


def test_each_rate_starts_with_the_next_system() -> None:
    systems = {"ours": "a", "before": "b", "bare": "c"}
    firsts = [in_turn(systems, turn)[0][0] for turn in range(4)]
    assert firsts == ["ours", "before", "bare", "ours"]
    assert sorted(in_turn(systems, 1)) == sorted(systems.items())
    assert in_turn({}, 3) == []
