"""EventSink over Kafka: the project's producer settings, awaited until the broker acks,
without ever blocking the event loop.

A request waits for the acknowledgement, so the delivery timeout here is short (the
producer's default of two minutes suits replay, not an HTTP client). When it expires the
outcome is definite (librdkafka gave up), so a 503 never hides a record written later.

The producer is librdkafka with ``streams.producer.producer_config`` (idempotent,
acks=all, the same partitioner as every other writer), driven for asyncio:

* ``publish`` queues the record (``produce`` copies it into librdkafka's queue and returns
  at once) and awaits an asyncio future; a full local queue is waited out with
  ``asyncio.sleep``, never a blocking ``poll`` on the loop's thread;
* one thread serves librdkafka's delivery reports and hands each poll's reports to the
  loop in one ``call_soon_threadsafe``: one wake-up of the loop per batch of
  acknowledgements instead of one per record (with ``concurrent.futures`` and
  ``asyncio.wrap_future``, each record cost a future of each kind and a wake-up).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import anyio
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient

from api.ports import EventSinkError, PortUnavailable
from streams.events import Event, Topics, encode
from streams.producer import LIBRDKAFKA_LOGGER, producer_config

logger = logging.getLogger(__name__)

# A full local queue (500,000 records) means the broker has been unreachable for a while;
# a request waits for room in steps of this long, up to its delivery timeout.
QUEUE_FULL_WAIT = 0.01
# How long one poll of the delivery thread waits for reports.
POLL_SECONDS = 0.05

# (future, error or None) per delivery report, in the order librdkafka reported them.
Reports = list[tuple["asyncio.Future[None]", KafkaError | None]]


class _DeliveryThread:
    """Serves delivery reports and resolves their futures on the loop, a poll at a time."""

    def __init__(self, producer: Producer, loop: asyncio.AbstractEventLoop) -> None:
        self._producer = producer
        self._loop = loop
        self._reports: Reports = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kafka-delivery", daemon=True)
        self._thread.start()

    def report(self, future: asyncio.Future[None], err: KafkaError | None, _: Message) -> None:
        """librdkafka's delivery callback; runs inside ``poll``/``flush``, off the loop."""
        self._reports.append((future, err))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(POLL_SECONDS)
            self._hand_over()

    def _hand_over(self) -> None:
        if not self._reports:
            return
        reports, self._reports = self._reports, []
        # A closed loop (RuntimeError) has nobody awaiting these any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(_resolve, reports)

    def stop_and_flush(self, timeout: float) -> int:
        """Stop polling, deliver what is queued (serving its reports); records left."""
        self._stop.set()
        self._thread.join()
        remaining = int(self._producer.flush(timeout))
        self._hand_over()
        return remaining


def _resolve(reports: Reports) -> None:
    for future, err in reports:
        if future.done():  # the request was cancelled meanwhile
            continue
        if err is None:
            future.set_result(None)
        else:
            future.set_exception(EventSinkError(err.str()))


class KafkaEventSink:
    def __init__(
        self,
        producer: Producer,
        deliveries: _DeliveryThread,
        topics: Topics,
        admin: AdminClient,
        *,
        delivery_timeout_seconds: float,
        ping_timeout: float = 2.0,
    ) -> None:
        self._producer = producer
        self._deliveries = deliveries
        self.topics = topics
        self._admin = admin
        self._delivery_timeout = delivery_timeout_seconds
        self._ping_timeout = ping_timeout

    async def publish(self, event: Event) -> None:
        key, value = encode(event)
        topic = self.topics.prefix + event.topic
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        on_delivery = partial(self._deliveries.report, future)
        deadline = time.monotonic() + self._delivery_timeout
        while True:
            try:
                self._producer.produce(topic, value, key, on_delivery=on_delivery)
                break
            except BufferError:
                if time.monotonic() > deadline:
                    raise EventSinkError(
                        f"event {event.event_id} not written: {topic}: the producer's queue "
                        "stayed full"
                    ) from None
                await asyncio.sleep(QUEUE_FULL_WAIT)
            except KafkaException as exc:
                raise EventSinkError(f"event {event.event_id} not written: {exc}") from exc
        try:
            await future
        except EventSinkError as exc:
            raise EventSinkError(f"event {event.event_id} not written: {topic}: {exc}") from exc

    async def ping(self) -> None:
        """The broker answers a metadata request and the API's topics exist."""
        try:
            metadata = await anyio.to_thread.run_sync(
                lambda: self._admin.list_topics(timeout=self._ping_timeout)
            )
        except KafkaException as exc:
            raise PortUnavailable(f"kafka broker unreachable: {exc}") from exc
        topics = self.topics
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
    producer = Producer(
        producer_config(
            bootstrap_servers,
            **(security or {}),
            **{"delivery.timeout.ms": timeout_ms, "request.timeout.ms": min(timeout_ms, 5000)},
        )
    )
    deliveries = _DeliveryThread(producer, asyncio.get_running_loop())
    # Its log lines go to the process's logging like the producer's, never to fd 2 (an
    # AdminClient is a librdkafka handle too: a broker that refuses connections was
    # reported on stderr every second while the process lived).
    admin_config: dict[str, Any] = {"bootstrap.servers": bootstrap_servers, **(security or {})}
    admin_config["logger"] = LIBRDKAFKA_LOGGER
    admin = AdminClient(admin_config)
    try:
        yield KafkaEventSink(
            producer,
            deliveries,
            topics,
            admin,
            delivery_timeout_seconds=delivery_timeout_seconds,
        )
    finally:
        # Flushing blocks until queued records are delivered: keep it off the event loop.
        remaining = await anyio.to_thread.run_sync(
            deliveries.stop_and_flush, delivery_timeout_seconds, abandon_on_cancel=True
        )
        if remaining:
            # Requests that queued these already answered 503 or counted a failed served
            # event; shutdown goes on.
            logger.warning("kafka producer closed with %d records undelivered", remaining)
