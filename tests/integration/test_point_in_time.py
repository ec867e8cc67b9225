"""Kafka → archiver → feature history → Feast point-in-time training set, on the real broker."""

from __future__ import annotations

import pandas as pd
import pytest

from streamrec.settings import Settings
from streams.archiver import Archiver
from streams.events import Interaction, Topics
from streams.producer import EventProducer
from training.data.datasets import build_training_set

pytestmark = pytest.mark.integration
T0 = 1_700_000_000_000


def _send(settings: Settings, events: list[Interaction]) -> None:
    with EventProducer(settings.bootstrap_servers, Topics(settings.topic_prefix)) as producer:
        for future in [producer.send(event) for event in events]:
            future.result(timeout=30)


@pytest.mark.parametrize("engine", ["feast", "asof"])
def test_a_later_event_in_the_log_does_not_change_earlier_examples(
    live_settings: Settings, engine: str
) -> None:
    settings = live_settings
    events = [
        Interaction(user_id=f"u{n % 3}", item_id=f"i{n % 5}", action="view", event_time=T0 + n)
        for n in range(30)
    ]
    _send(settings, events)
    Archiver(settings).run_once()
    before, report = build_training_set(settings, negatives=2, seed=3, engine=engine)
    assert report.interactions == 30
    assert (before["label"] == 1).sum() == 30

    # u0's first example sees nothing; its third sees its first two items, newest first.
    u0 = before[(before.user_id == "u0") & (before.label == 1)].reset_index(drop=True)
    assert u0.loc[0, "user_recent__recent_items"] == []
    assert u0.loc[2, "user_recent__recent_items"] == ["i3", "i0"]

    _send(
        settings, [Interaction(user_id="u0", item_id="i9", action="purchase", event_time=T0 + 99)]
    )
    Archiver(settings).run_once()
    after, _ = build_training_set(settings, negatives=2, seed=3, engine=engine)
    assert len(after) > len(before)
    earlier = after[after.event_time < T0 + 99].reset_index(drop=True)
    pd.testing.assert_frame_equal(before, earlier)
