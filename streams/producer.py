"""The one Kafka producer every writer uses: idempotent, acks=all, delivery confirmed.

``send`` returns a future that resolves when the broker has the record, or fails with
:class:`DeliveryFailed`; nothing accepted is dropped silently. A background thread serves
delivery callbacks, so callers on an asyncio loop can ``await asyncio.wrap_future(...)``.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from streams.events import LogEvent, Topics, encode

# librdkafka's own log lines (a broker that refuses connections, retries) go through Python
# logging, served by whoever polls the producer, instead of straight to file descriptor 2 from
# librdkafka's threads: a process's log configuration applies to them, pytest captures them
# per test, and a leaked producer nobody polls stays quiet.
LIBRDKAFKA_LOGGER = logging.getLogger("librdkafka")
# What librdkafka reports as a warning but retries by itself and always gets past on a
# healthy broker: a broker that just started is still loading its coordinator state (every
# `make demo` and replay right after `services up` printed it). Logged at DEBUG.
TRANSIENT_RETRIES = ("Coordinator load in progress",)


class _TransientRetriesAtDebug(logging.Filter):
    """Demotes librdkafka's self-healing retries to DEBUG (kept only when DEBUG is on)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG and any(
            text in record.getMessage() for text in TRANSIENT_RETRIES
        ):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return LIBRDKAFKA_LOGGER.isEnabledFor(logging.DEBUG)
        return True


LIBRDKAFKA_LOGGER.addFilter(_TransientRetriesAtDebug())


class DeliveryFailed(RuntimeError):
    """The broker did not take a record within the delivery timeout."""


def producer_config(bootstrap_servers: str, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers,
        # Idempotence: retries after a broker restart never write a record twice.
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        # Keep retrying through a broker restart for two minutes before giving up loudly.
        "delivery.timeout.ms": 120_000,
        "queue.buffering.max.messages": 500_000,
        "logger": LIBRDKAFKA_LOGGER,
    }
    config.update(overrides)
    return config


class EventProducer:
    """Produces events to their topics under one prefix."""

    def __init__(self, bootstrap_servers: str, topics: Topics, **overrides: Any) -> None:
        self.topics = topics
        self._producer = Producer(producer_config(bootstrap_servers, **overrides))
        self._closed = threading.Event()
        self._poller = threading.Thread(target=self._poll_loop, name="kafka-delivery", daemon=True)
        self._poller.start()

    def _poll_loop(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(0.1)

    def topic_for(self, event: LogEvent) -> str:
        return self.topics.prefix + event.topic

    def send(self, event: LogEvent) -> Future[Message]:
        """Queue one event; the future resolves once the broker has acknowledged it."""
        key, value = encode(event)
        return self.send_raw(self.topic_for(event), key, value)

    def send_raw(self, topic: str, key: bytes | None, value: bytes) -> Future[Message]:
        future: Future[Message] = Future()

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                future.set_exception(DeliveryFailed(f"{topic}: {err.str()}"))
            else:
                future.set_result(msg)

        while True:
            try:
                self._producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
                return future
            except BufferError:
                # Local queue full: wait for deliveries to drain rather than drop the event.
                self._producer.poll(0.05)
            except KafkaException as exc:
                future.set_exception(DeliveryFailed(f"{topic}: {exc}"))
                return future

    def flush(self, timeout: float = 120.0) -> int:
        """Wait for queued records; returns how many are still undelivered."""
        return int(self._producer.flush(timeout))

    def close(self, timeout: float = 120.0) -> None:
        remaining = self.flush(timeout)
        self._closed.set()
        self._poller.join(timeout=1.0)
        if remaining:
            raise DeliveryFailed(f"{remaining} records undelivered at close")

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
