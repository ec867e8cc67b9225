"""Dead-lettering from the consumers outside Faust (archiver, backfill): a record a consumer
cannot process goes to the dead-letter topic with the reason, and the consumer moves on.

The worker sends its own through Faust (``streams.agents``); the Spark job through Spark's
Kafka sink (``streams.spark.job``). All use the one record layout of
``streams.events.dead_letter``.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future

from confluent_kafka import Message

from streams.events import Topics, dead_letter
from streams.producer import DeliveryFailed, EventProducer

log = logging.getLogger(__name__)


class DeadLetters:
    """Sends refused records of one consumer; ``flush`` before committing past them."""

    def __init__(self, bootstrap_servers: str, topics: Topics, consumer: str) -> None:
        self._producer = EventProducer(bootstrap_servers, topics)
        self._topic = topics.dead_letters
        self._consumer = consumer
        self._pending: list[Future[Message]] = []
        self.sent = 0

    def send(
        self,
        *,
        topic: str,
        partition: int | None,
        offset: int | None,
        key: bytes | None,
        value: bytes | None,
        reason: str,
    ) -> None:
        record_key, body = dead_letter(
            topic=topic,
            partition=partition,
            offset=offset,
            key=key,
            value=value,
            reason=reason,
            consumer=self._consumer,
        )
        self._pending.append(self._producer.send_raw(self._topic, record_key, body))
        self.sent += 1
        log.warning(
            "%s dead-lettered %s[%s]@%s: %s", self._consumer, topic, partition, offset, reason
        )

    def flush(self, timeout: float = 120.0) -> None:
        """Block until every dead letter sent so far is on the broker; raise otherwise, so
        the caller does not commit past a record that is neither processed nor reported."""
        if not self._pending:
            return
        self._producer.flush(timeout)
        pending, self._pending = self._pending, []
        for future in pending:
            future.result(timeout=0)  # raises DeliveryFailed

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._producer.close()


__all__ = ["DeadLetters", "DeliveryFailed"]
