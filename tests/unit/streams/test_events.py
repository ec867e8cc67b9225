from __future__ import annotations

import base64
import json

import pytest

from streams.events import (
    MAX_RECORD_BYTES,
    Click,
    EventRejected,
    Interaction,
    RecommendationServed,
    RecommendedItem,
    Topics,
    dead_letter,
    decode,
    encode,
)


def test_round_trip_keeps_every_field_and_keys_by_user() -> None:
    event = Interaction(
        user_id="u1",
        item_id="B000123",
        action="rate",
        rating=4.5,
        source="replay",
        event_time=1_700_000_000_000,
    )
    key, value = encode(event)
    assert key == b"u1"
    payload = json.loads(value)
    assert payload["schema"] == 1 and payload["event_id"] == event.event_id
    assert decode(Interaction, value) == event


def test_recommendation_served_round_trip() -> None:
    served = RecommendationServed(
        request_id="r1",
        user_id="u1",
        variant="default",
        model_version="m1",
        items=(RecommendedItem(item_id="i1", rank=1, score=0.5, reason="popular"),),
    )
    assert decode(RecommendationServed, encode(served)[1]) == served


def test_events_are_frozen() -> None:
    click = Click(request_id="r", user_id="u", item_id="i", rank=1)
    with pytest.raises(Exception, match="frozen"):
        click.item_id = "other"  # type: ignore[misc]


def test_event_ids_are_unique() -> None:
    ids = {Interaction(user_id="u", item_id="i", action="view").event_id for _ in range(1000)}
    assert len(ids) == 1000


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "null value"),
        (b"\xff\xfe", "not JSON"),
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"user_id": "u"}', "schema version"),
        (b'{"schema": 2, "user_id": "u"}', "unsupported schema version 2"),
        (b'{"schema": true}', "schema version"),
        (
            b'{"schema": 1, "event_id": "e", "event_time": 1700000000000, "user_id": "u", '
            b'"item_id": "i", "action": "steal"}',
            "action",
        ),
        (
            b'{"schema": 1, "event_id": "e", "event_time": 1700000000, "user_id": "u", '
            b'"item_id": "i", "action": "view"}',
            "event_time",
        ),
        (
            b'{"schema": 1, "event_id": "e", "event_time": 1700000000000, "user_id": "", '
            b'"item_id": "i", "action": "view"}',
            "user_id",
        ),
        (
            b'{"schema": 1, "event_id": "e", "event_time": 1700000000000, "user_id": "u", '
            b'"item_id": "i", "action": "view", "surprise": 1}',
            "surprise",
        ),
    ],
)
def test_bad_records_are_rejected_with_a_reason(value: bytes | None, reason: str) -> None:
    with pytest.raises(EventRejected) as caught:
        decode(Interaction, value)
    assert reason in caught.value.reason


def test_oversized_record_is_rejected_before_parsing() -> None:
    value = b'{"pad": "' + b"x" * MAX_RECORD_BYTES + b'"}'
    with pytest.raises(EventRejected, match="exceeds"):
        decode(Interaction, value)


def test_dead_letter_keeps_the_raw_bytes_and_the_reason() -> None:
    raw = b"\x00\xffnot an event"
    key, value = dead_letter(
        topic="p.interactions", partition=2, offset=7, key=b"u1", value=raw, reason="not JSON"
    )
    body = json.loads(value)
    assert key == b"u1"
    assert base64.b64decode(body["value_b64"]) == raw
    assert (body["reason"], body["topic"], body["partition"], body["offset"]) == (
        "not JSON",
        "p.interactions",
        2,
        7,
    )


def test_topics_carry_the_prefix_and_map_back_to_event_types() -> None:
    topics = Topics("tenant-a.")
    assert topics.interactions == "tenant-a.interactions"
    assert topics.dead_letters == "tenant-a.dead-letters"
    assert topics.event_type(topics.clicks) is Click
    with pytest.raises(KeyError):
        topics.event_type("other.clicks")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (  # issue 19's poison pill: the archive stores rank as int32
            b'{"schema": 1, "event_id": "e", "event_time": 1700000000000, "user_id": "u", '
            b'"request_id": "r", "item_id": "i", "rank": 2147483648}',
            "rank",
        ),
        (
            b'{"schema": 1, "event_id": "e", "event_time": 1700000000000, "user_id": "u\\nx", '
            b'"request_id": "r", "item_id": "i", "rank": 1}',
            "user_id",
        ),
        (
            b'{"schema": 1, "event_id": "e", "event_time": 1700000000, "user_id": "u", '
            b'"request_id": "r", "item_id": "i", "rank": 1}',
            "milliseconds",
        ),
    ],
)
def test_clicks_outside_the_bounds_are_rejected(value: bytes, reason: str) -> None:
    with pytest.raises(EventRejected, match=reason):
        decode(Click, value)


def test_numeric_ids_decode_as_strings() -> None:
    value = (
        b'{"schema": 1, "event_id": "e", "event_time": 1700000000000, "user_id": 196, '
        b'"item_id": 242, "action": "view"}'
    )
    event = decode(Interaction, value)
    assert (event.user_id, event.item_id) == ("196", "242")
