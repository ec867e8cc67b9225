"""Issue 19 §1: hostile records on the real broker. The archiver and the backfill send each
one to the dead-letter topic with the reason and carry on (the worker's own test is
``test_faults.test_bad_records_are_dead_lettered_and_the_worker_keeps_going``)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from streamrec.settings import Settings
from streams.archiver import Archiver, read_clicks, read_interactions
from streams.backfill import fold_log, read_log
from streams.dead_letters import DeadLetters
from streams.events import Click, Interaction, Topics
from streams.producer import EventProducer

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000
_CLICK = '{"schema": 1, "event_id": "%s", "event_time": %d, "user_id": "u1", "request_id": "r1", "item_id": "i1", "rank": %s}'  # noqa: E501
_VIEW = '{"schema": 1, "event_id": "%s", "event_time": %d, "user_id": %s, "item_id": "i1", "action": "rate", "rating": %s}'  # noqa: E501
# (topic kind, raw value, a fragment of the reason)
HOSTILE: list[tuple[str, bytes, str]] = [
    ("clicks", (_CLICK % ("c31", T0, 2**31)).encode(), "rank"),  # the poison pill of issue 19
    ("clicks", (_CLICK % ("c63", T0, 2**63)).encode(), "rank"),
    ("interactions", (_VIEW % ("nan", T0, '"u1"', "NaN")).encode(), "not JSON"),
    ("interactions", (_VIEW % ("big", T0, '"u1"', "1e309")).encode(), "infinity"),
    ("interactions", (_VIEW % ("lf", T0, '"u1\\r\\nforged"', "4")).encode(), "user_id"),
    ("interactions", (_VIEW % ("sec", T0 // 1000, '"u1"', "4")).encode(), "milliseconds"),
]


def _produce(settings: Settings) -> None:
    topics = Topics(settings.topic_prefix)
    with EventProducer(settings.bootstrap_servers, topics) as producer:
        producer.send(Interaction(user_id="u1", item_id="i0", action="view", event_time=T0))
        for kind, value, _ in HOSTILE:
            producer.send_raw(topics.prefix + kind, b"u1", value)
        producer.send(Interaction(user_id="u1", item_id="i2", action="view", event_time=T0 + 1))
        producer.send(Click(user_id="u1", request_id="r1", item_id="i2", rank=2, event_time=T0))


def _dead_letters(settings: Settings, consumer: str) -> list[dict[str, Any]]:
    topic = Topics(settings.topic_prefix).dead_letters
    letters = [
        json.loads(value or b"{}")
        for batch in read_log(settings.bootstrap_servers, [topic])
        for *_, value in batch
    ]
    return [letter for letter in letters if letter["consumer"] == consumer]


def _assert_each_hostile_record_reported(letters: list[dict[str, Any]]) -> None:
    assert len(letters) == len(HOSTILE)
    for _kind, _value, fragment in HOSTILE:
        assert any(fragment in letter["reason"] for letter in letters), (fragment, letters)


def test_the_archiver_dead_letters_hostile_records_and_archives_the_rest(
    live_settings: Settings,
) -> None:
    _produce(live_settings)
    stats = Archiver(live_settings, flush_records=3).run_once()
    topics = Topics(live_settings.topic_prefix)
    assert sum(stats.skipped.values()) == len(HOSTILE)
    interactions = read_interactions(live_settings.data_dir, live_settings.topic_prefix)
    assert sorted(interactions["item_id"].to_pylist()) == ["i0", "i2"]
    assert read_clicks(live_settings.data_dir, live_settings.topic_prefix)["rank"].to_pylist() == [
        2
    ]
    _assert_each_hostile_record_reported(_dead_letters(live_settings, "archiver"))
    # committed past them: a restart archives nothing again and does not fail
    again = Archiver(live_settings).run_once()
    assert again.files == [] and sum(again.records.values()) == 0
    assert topics.clicks in stats.records


def test_the_backfill_dead_letters_hostile_records_and_folds_the_rest(
    live_settings: Settings,
) -> None:
    _produce(live_settings)
    dead_letters = DeadLetters(
        live_settings.bootstrap_servers, Topics(live_settings.topic_prefix), "backfill"
    )
    try:
        users, items, report = fold_log(live_settings, dead_letters=dead_letters)
    finally:
        dead_letters.close()
    assert report.rejected == len(HOSTILE)
    assert report.interactions == 2 and set(users) == {"u1"}
    _assert_each_hostile_record_reported(_dead_letters(live_settings, "backfill"))
