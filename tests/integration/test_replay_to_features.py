"""A replayed slice of a prepared log becomes exactly the expected online features."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from streamrec.infra.feast_store import apply_definitions, open_store
from streamrec.infra.lag import wait_until_caught_up
from streamrec.infra.processes import run_streamrec, streamrec_process
from streamrec.settings import Settings
from streamrec.times import format_ms
from tests.support import wait_until


def test_replayed_time_slice_folds_into_exact_features(
    live_settings: Settings, tmp_path: Path
) -> None:
    settings = live_settings
    run_streamrec(settings, "data", "prepare", "synthetic:users=80,items=40,events=3000,seed=3")
    log = pq.read_table(settings.data_dir / "datasets" / "synthetic" / "events.parquet")
    times = log["event_time"].to_pylist()
    since, until = times[len(times) // 4], times[3 * len(times) // 4]
    window = log.filter(
        pc.and_(pc.greater_equal(log["event_time"], since), pc.less(log["event_time"], until))
    ).to_pylist()
    assert 1000 < len(window) < 2000

    store = open_store(settings)
    apply_definitions(store)
    log_file = tmp_path / "worker.log"
    with streamrec_process(settings, "worker", log=log_file):
        # ISO for one bound and epoch seconds for the other: both forms are accepted.
        run_streamrec(
            settings,
            "replay",
            "synthetic",
            "--speed",
            "max",
            "--since",
            format_ms(since),
            "--until",
            f"{until / 1000:.3f}",
        )
        wait_until_caught_up(settings.bootstrap_servers, f"{settings.topic_prefix}worker", 120)

        per_user: dict[str, list[dict[str, object]]] = defaultdict(list)
        for row in window:
            per_user[str(row["user_id"])].append(row)
        users = sorted(per_user)
        online = store.get_online_features(
            features=["user_recent:recent_items", "user_recent:interaction_count"],
            entity_rows=[{"user_id": u} for u in users],
        ).to_dict()
        for user, items, count in zip(
            users, online["recent_items"], online["interaction_count"], strict=True
        ):
            rows = sorted(per_user[user], key=lambda r: r["event_time"], reverse=True)  # type: ignore[arg-type,return-value]
            assert count == len(rows), user
            expected = [r["item_id"] for r in rows[: settings.recent_items_max]]
            # equal-time events may be ordered either way; compare as multisets plus order of times
            assert Counter(items) == Counter(expected), user

        expected_items = dict(sorted(Counter(str(r["item_id"]) for r in window).items()))

        def online_item_counts() -> dict[str, int]:
            got = store.get_online_features(
                features=["item_stats:interaction_count"],
                entity_rows=[{"item_id": i} for i in expected_items],
            ).to_dict()
            return dict(zip(got["item_id"], got["interaction_count"], strict=True))

        # The item side folds per-item deltas from the worker's activity topic, one hop later.
        try:
            wait_until(lambda: online_item_counts() == expected_items, 30, "item counts")
        finally:
            assert online_item_counts() == expected_items
