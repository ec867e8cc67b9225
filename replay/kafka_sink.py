"""The replayer's Kafka sink: encoded records straight into librdkafka, no object per event.

The producer has the settings of the project's one producer (``streams.producer.
producer_config``: idempotent, acks=all, lz4, the same partitioner, so a user's replayed
and live events share a partition), tuned for throughput: a longer linger and larger
batches fill a request with thousands of records, and delivery reports come only for
failures, so a delivered record costs no Python call at all. A failure is counted with its
first error; ``flush`` returns what is still undelivered.
"""

from __future__ import annotations

import threading
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from replay.encoding import Records
from streams.producer import DeliveryFailed, producer_config

# Throughput over latency: nobody waits on a single replayed event. (librdkafka caps a
# request at batch.size bytes; 1 MB is about 6,000 MovieLens events.)
REPLAY_TUNING: dict[str, Any] = {
    "linger.ms": 50,
    "batch.num.messages": 100_000,
    "batch.size": 1_000_000,
    "queue.buffering.max.messages": 1_000_000,
    "delivery.report.only.error": True,
}


class KafkaSink:
    """Produces records to one topic (``topic``: the prefixed interactions topic)."""

    def __init__(self, bootstrap_servers: str, topic: str, **overrides: Any) -> None:
        self.topic = topic
        self._lock = threading.Lock()
        self._failed = 0
        self._first_error: BaseException | None = None
        self._producer = Producer(
            producer_config(
                bootstrap_servers, **{**REPLAY_TUNING, **overrides, "on_delivery": self._report}
            )
        )

    def send(self, records: Records) -> None:
        produce, poll = self._producer.produce, self._producer.poll
        topic = self.topic
        for key, value in zip(records.keys, records.values, strict=True):
            while True:
                try:
                    produce(topic, value, key)
                    break
                except BufferError:
                    # Local queue full: wait for deliveries to drain rather than drop.
                    poll(0.05)
                except KafkaException as exc:
                    self._fail(DeliveryFailed(f"{topic}: {exc}"))
                    break
        poll(0)  # serve failure reports

    def failures(self) -> tuple[int, BaseException | None]:
        with self._lock:
            return self._failed, self._first_error

    def flush(self, timeout: float = 120.0) -> int:
        return int(self._producer.flush(timeout))

    def close(self, timeout: float = 120.0) -> None:
        """Flush; DeliveryFailed if records stayed undelivered or failed."""
        remaining = self.flush(timeout)
        failed, error = self.failures()
        if remaining or failed:
            raise DeliveryFailed(
                f"{self.topic}: {remaining} records undelivered at close, {failed} failed"
                + (f" (first error: {error})" if error else "")
            )

    def _report(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._fail(DeliveryFailed(f"{self.topic}: {err.str()}"))

    def _fail(self, error: BaseException) -> None:
        with self._lock:
            self._failed += 1
            if self._first_error is None:
                self._first_error = error
