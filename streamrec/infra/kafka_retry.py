"""Retrying the Kafka calls that fail transiently, with backoff and a clear message.

A broker that was just created has no group coordinator yet (``__consumer_offsets`` is
being created), a restarted one is still electing leaders: ``committed``, ``commit``,
``list_topics`` and the admin calls then fail with errors such as ``NOT_COORDINATOR`` or
``COORDINATOR_LOAD_IN_PROGRESS`` that go away within seconds. Every Kafka client path
(archiver, backfill, lag, replay, worker start-up) goes through :func:`call_with_retry`
instead of failing on the first one; other errors are raised at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from confluent_kafka import KafkaError, KafkaException
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_exponential_jitter,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

# librdkafka marks most of these retriable itself; the coordinator errors of a fresh broker
# arrive from the offset APIs without the flag, so they are listed here by code.
RETRIABLE_CODES = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.NOT_CONTROLLER,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._TIMED_OUT,
        KafkaError._WAIT_COORD,
        KafkaError._ALL_BROKERS_DOWN,
    }
)
# Long enough for a fresh single broker to create its offsets topic (seconds), short enough
# that a broker that is really gone is reported within a minute.
RETRY_SECONDS = 60.0


def kafka_error(exc: BaseException) -> KafkaError | None:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


def is_retriable(exc: BaseException) -> bool:
    error = kafka_error(exc)
    if error is None:
        return False
    return bool(error.retriable()) or error.code() in RETRIABLE_CODES


def call_with_retry(what: str, func: Callable[[], T], *, retry_seconds: float = RETRY_SECONDS) -> T:
    """``func()``, retried with exponential backoff while it raises a retriable Kafka error,
    for at most ``retry_seconds``; then the last error is raised."""

    def say(state: RetryCallState) -> None:
        outcome = state.outcome
        exc = outcome.exception() if outcome is not None else None
        error = kafka_error(exc) if exc is not None else None
        name = error.name() if error is not None else type(exc).__name__
        log.warning(
            "%s: transient Kafka error %s (attempt %d, %.1fs so far); retrying",
            what,
            name,
            state.attempt_number,
            state.seconds_since_start,
        )

    retrying = Retrying(
        retry=retry_if_exception(is_retriable),
        wait=wait_exponential_jitter(initial=0.2, max=5.0),
        stop=stop_after_delay(retry_seconds),
        before_sleep=say,
        reraise=True,
    )
    return retrying(func)
