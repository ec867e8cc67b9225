"""The replayer's Kafka sink: the project's one producer (idempotent, acks=all)."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

from streams.events import Interaction
from streams.producer import EventProducer


class KafkaSink:
    """Sends each event with ``EventProducer.send``; its futures report delivery."""

    def __init__(self, producer: EventProducer) -> None:
        self.producer = producer

    def send(self, event: Interaction) -> Future[Any]:
        return self.producer.send(event)

    def flush(self) -> int:
        return self.producer.flush()
