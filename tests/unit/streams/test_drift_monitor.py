"""`streamrec drift` over an archive on disk: the windows either side of the reference
cutoff, a planted popularity inversion flagged, exported, and no alarm without it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
from prometheus_client import generate_latest

from streamrec.settings import Settings
from streams.archiver import INTERACTION_SCHEMA, part_name, topic_dir, write_atomically
from streams.drift_monitor import DriftMetrics, check_once
from streams.events import Topics

CUTOFF = 1_000_000


def _archive(settings: Settings, invert_after_cutoff: bool, n: int = 4000) -> None:
    rng = np.random.default_rng(5)
    weights = np.arange(1, 201, dtype=float) ** -1.0
    rows = []
    for i in range(n):
        after = i >= n // 2
        w = weights[::-1] if after and invert_after_cutoff else weights
        item = int(rng.choice(200, p=w / w.sum()))
        rows.append(
            {
                "event_id": f"e{i}",
                "event_time": CUTOFF + (i - n // 2) * 1000,
                "user_id": str(int(rng.integers(0, 300))),
                "item_id": str(item),
                "action": str(rng.choice(["view", "click"])),
                "rating": None,
                "source": "replay",
                "kafka_partition": 0,
                "kafka_offset": i,
            }
        )
    topic = Topics(settings.topic_prefix).interactions
    path = topic_dir(settings.data_dir, topic) / part_name(0, 0, n - 1)
    write_atomically(pa.Table.from_pylist(rows, schema=INTERACTION_SCHEMA), path)


def test_a_popularity_inversion_after_the_cutoff_is_flagged_and_exported(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, topic_prefix="d.")
    _archive(settings, invert_after_cutoff=True)
    results, n_ref, n_cur = check_once(settings, CUTOFF, window_events=1500)
    assert (n_ref, n_cur) == (1500, 1500)
    assert {r.column for r in results if r.drifted} >= {"item_popularity"}
    assert "action" not in {r.column for r in results if r.drifted}
    metrics = DriftMetrics.create()
    metrics.record(results, n_ref, n_cur)
    text = generate_latest(metrics.registry).decode()
    assert 'streamrec_drift_detected{column="item_popularity"} 1.0' in text
    assert 'streamrec_drift_detected{column="action"} 0.0' in text


def test_the_same_traffic_either_side_is_not_flagged(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, topic_prefix="d.")
    _archive(settings, invert_after_cutoff=False)
    results, _, _ = check_once(settings, CUTOFF, window_events=1500)
    assert results and not [r for r in results if r.drifted], results


def test_too_few_events_after_the_cutoff_give_no_result(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, topic_prefix="d.")
    _archive(settings, invert_after_cutoff=True)
    assert check_once(settings, CUTOFF + 10**9, window_events=1500)[0] == []
