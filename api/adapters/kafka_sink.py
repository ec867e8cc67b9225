"""EventSink over Kafka: the project's EventProducer, awaited until the broker acks.

A request waits for the acknowledgement, so the delivery timeout here is short (the
producer's default of two minutes suits replay, not an HTTP client). When it expires the
outcome is definite (librdkafka gave up), so a 503 never hides a record written later.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import anyio
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from api.ports import EventSinkError, PortUnavailable
from streams.events import Event, Topics
from streams.producer import DeliveryFailed, EventProducer

logger = logging.getLogger(__name__)


class KafkaEventSink:
    def __init__(
        self, producer: EventProducer, admin: AdminClient, *, ping_timeout: float = 2.0
    ) -> None:
        self._producer = producer
        self._admin = admin
        self._ping_timeout = ping_timeout

    async def publish(self, event: Event) -> None:
        try:
            await asyncio.wrap_future(self._producer.send(event))
        except DeliveryFailed as exc:
            raise EventSinkError(f"event {event.event_id} not written: {exc}") from exc

    async def ping(self) -> None:
        """The broker answers a metadata request and the API's topics exist."""
        try:
            metadata = await anyio.to_thread.run_sync(
                lambda: self._admin.list_topics(timeout=self._ping_timeout)
            )
        except KafkaException as exc:
            raise PortUnavailable(f"kafka broker unreachable: {exc}") from exc
        topics = self._producer.topics
        missing = [
            name
            for name in (topics.interactions, topics.recommendations, topics.clicks)
            if name not in metadata.topics
        ]
        if missing:
            raise PortUnavailable(f"kafka topics missing: {', '.join(missing)}")


@asynccontextmanager
async def open_kafka_sink(
    bootstrap_servers: str,
    topics: Topics,
    *,
    delivery_timeout_seconds: float = 10.0,
    security: Mapping[str, str] | None = None,
) -> AsyncIterator[KafkaEventSink]:
    timeout_ms = int(delivery_timeout_seconds * 1000)
    producer = EventProducer(
        bootstrap_servers,
        topics,
        **(security or {}),
        **{"delivery.timeout.ms": timeout_ms, "request.timeout.ms": min(timeout_ms, 5000)},
    )
    admin = AdminClient({"bootstrap.servers": bootstrap_servers, **(security or {})})
    try:
        yield KafkaEventSink(producer, admin)
    finally:
        # Flushing blocks until queued records are delivered: keep it off the event loop.
        try:
            await anyio.to_thread.run_sync(
                lambda: producer.close(timeout=delivery_timeout_seconds), abandon_on_cancel=True
            )
        except DeliveryFailed as exc:
            # Requests that queued these already answered 503 or counted a failed served
            # event; shutdown goes on.
            logger.warning("kafka producer closed with records undelivered: %s", exc)
