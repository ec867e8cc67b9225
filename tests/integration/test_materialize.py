"""`streamrec materialize` against the real Redis: the archived log folded into the Feast
batch sources, then materialized online, equals the fold of the log up to the end time;
an incremental run afterwards brings the online store to the whole log."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest

from streamrec.infra.feast_store import open_store
from streamrec.infra.processes import CommandFailed, run_streamrec
from streamrec.settings import Settings
from streams.events import ACTIONS, Interaction, Topics
from streams.producer import EventProducer
from tests.integration.test_backfill import online

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000
MINUTE = 60_000


def _produce(settings: Settings, n: int) -> list[Interaction]:
    events = [
        Interaction(
            user_id=f"u{k % 7}",
            item_id=f"i{(k * 5) % 11}",
            action=ACTIONS[k % len(ACTIONS)],
            event_time=T0 + k * MINUTE,
        )
        for k in range(n)
    ]
    with EventProducer(settings.bootstrap_servers, Topics(settings.topic_prefix)) as producer:
        for event in events:
            producer.send(event)
        producer.flush()
    return events


def _counts(store: object, view: str, key: str, ids: list[str]) -> dict[str, int | None]:
    rows = online(store, view, key, ids, ["interaction_count"])  # type: ignore[arg-type]
    return {entity: row["interaction_count"] for entity, row in rows.items()}


def test_materialize_then_incremental(live_settings: Settings) -> None:
    settings = live_settings
    with pytest.raises(CommandFailed, match="no archived interactions"):
        run_streamrec(settings, "materialize", "--start", "0", "--end", "1")

    events = _produce(settings, 300)
    run_streamrec(settings, "archive", "--once")
    users = sorted({e.user_id for e in events})
    items = sorted({e.item_id for e in events})
    store = open_store(settings)

    # Up to the middle of the log: every entity holds its fold of the events stamped <= T1.
    t1 = T0 + 150 * MINUTE
    output = run_streamrec(
        settings, "materialize", "--start", str(T0 // 1000 - 1), "--end", str(t1 / 1000)
    )
    assert "materialized user_recent, item_stats" in output, output
    early = [e for e in events if e.event_time <= t1]
    assert _counts(store, "user_recent", "user_id", users) == Counter(e.user_id for e in early)
    assert _counts(store, "item_stats", "item_id", items) == Counter(e.item_id for e in early)
    recent = online(store, "user_recent", "user_id", ["u0"], ["recent_items"])["u0"]
    assert (
        recent["recent_items"][0]
        == max((e for e in early if e.user_id == "u0"), key=lambda e: e.event_time).item_id
    )

    # Incremental to the end: starts where the last run ended and reaches the whole log.
    end = T0 + 400 * MINUTE
    run_streamrec(settings, "materialize", "--incremental", "--end", str(end / 1000))
    assert _counts(store, "user_recent", "user_id", users) == Counter(e.user_id for e in events)
    assert _counts(store, "item_stats", "item_id", items) == Counter(e.item_id for e in events)
    view = open_store(settings).get_feature_view("user_recent")
    intervals = sorted(view.materialization_intervals)
    assert intervals[-1][0] == datetime.fromtimestamp(t1 / 1000, tz=UTC)
    assert intervals[-1][1] == datetime.fromtimestamp(end / 1000, tz=UTC)

    with pytest.raises(CommandFailed, match="unknown feature views"):
        run_streamrec(settings, "materialize", "--incremental", "--views", "nope")
