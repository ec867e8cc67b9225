"""Reading records: raw bytes in, events out, and undecodable records dead-lettered."""

from __future__ import annotations

import asyncio
import base64
import json
from types import SimpleNamespace
from typing import Any, cast

import faust
from prometheus_client import CollectorRegistry, Counter

from streams.decoding import DeadLetters, RawSchema
from streams.events import Click, Interaction, Topics, encode


def test_the_raw_schema_decodes_as_faust_s_raw_codec() -> None:
    app = faust.App("raw-schema-test", broker="memory://")
    message = SimpleNamespace(key=b"u1", value=b'{"v": 1}', headers=[])
    faust_raw = faust.Schema(key_serializer="raw", value_serializer="raw")
    for schema in (RawSchema(), faust_raw):
        event = asyncio.run(schema.decode(app, cast(Any, message)))
        assert (event.key, event.value) == (b"u1", b'{"v": 1}')


class _Topic:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes | None, bytes]] = []

    async def send(self, *, key: bytes | None, value: bytes) -> None:
        self.sent.append((key, value))


def _record(topic: str, offset: int, value: bytes | None, key: bytes = b"u1") -> Any:
    message = SimpleNamespace(topic=topic, partition=1, offset=offset, key=key, value=value)
    return SimpleNamespace(message=message)


def test_a_batch_decodes_by_topic_and_dead_letters_what_does_not_decode() -> None:
    topics = Topics("t.")
    rejected = Counter("rejected", "", ["topic"], registry=CollectorRegistry())
    dead = _Topic()
    letters = DeadLetters(cast(Any, dead), topics, rejected)
    view = Interaction(user_id="u1", item_id="i1", action="view", event_time=1_700_000_000_000)
    click = Click(request_id="r", user_id="u1", item_id="i1", rank=1, event_time=view.event_time)
    batch = [
        _record(topics.interactions, 5, encode(view)[1]),
        _record(topics.interactions, 6, b"not json"),
        _record(topics.clicks, 7, encode(click)[1]),
        _record(topics.clicks, 8, encode(view)[1]),  # an interaction is no click
    ]
    decoded = asyncio.run(letters.decode_batch(batch))

    assert [(record.message.offset, event) for record, event in decoded] == [(5, view), (7, click)]
    bodies = [json.loads(value) for _, value in dead.sent]
    assert [(b["topic"], b["offset"]) for b in bodies] == [
        (topics.interactions, 6),
        (topics.clicks, 8),
    ]
    assert base64.b64decode(bodies[0]["value_b64"]) == b"not json"  # the raw bytes kept
    assert bodies[0]["reason"].startswith("not JSON")
    assert rejected.labels(topics.interactions)._value.get() == 1
    assert rejected.labels(topics.clicks)._value.get() == 1
