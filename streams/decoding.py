"""How the worker reads records: raw bytes in, events out, and the dead-letter path for
records it cannot read (``streams.events.decode`` says why; the reason goes with them)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import faust
from prometheus_client import Counter

from streams.events import Event, EventRejected, Topics, dead_letter, decode

log = logging.getLogger(__name__)


class RawSchema(faust.Schema):
    """Keys and values as the bytes received, as the "raw" codec gives them, but without
    Faust's codec lookups for every record (a twentieth of the worker's time, py-spy);
    ``streams.events.decode`` parses the value."""

    def __init__(self) -> None:
        super().__init__(key_serializer="raw", value_serializer="raw")

    def loads_key(self, app: Any, message: Any, **kwargs: Any) -> Any:
        return message.key

    def loads_value(self, app: Any, message: Any, **kwargs: Any) -> Any:
        return message.value


class DeadLetters:
    """Decodes a batch by the event type of each record's topic; a record that does not
    decode goes to the dead-letter topic with its raw bytes and the reason, and the batch
    goes on without it."""

    def __init__(self, topic: faust.TopicT, topics: Topics, rejected: Counter) -> None:
        self._topic = topic
        self._topics = topics
        self._rejected = rejected

    async def decode_batch(self, events: Sequence[faust.EventT]) -> list[tuple[Any, Event]]:
        """The events that decode, each with its Faust event, in batch order."""
        decoded: list[tuple[Any, Event]] = []
        for event in events:
            message = event.message
            kind = self._topics.event_type(message.topic)
            try:
                decoded.append((event, decode(kind, message.value)))
            except EventRejected as rejected:
                await self.send(event, rejected.reason)
        return decoded

    async def send(self, event: faust.EventT, reason: str) -> None:
        message = event.message
        key, value = dead_letter(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            value=message.value,
            reason=reason,
            consumer="worker",
        )
        await self._topic.send(key=key, value=value)
        self._rejected.labels(message.topic).inc()
        log.warning(
            "dead-lettered %s[%s]@%s: %s", message.topic, message.partition, message.offset, reason
        )
