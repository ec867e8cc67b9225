"""Retriable Kafka errors are retried with backoff; others are raised at once."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from streamrec.infra.kafka_retry import call_with_retry, is_retriable


def _failing(times: int, code: int) -> tuple[list[int], object]:
    calls: list[int] = []

    def call() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise KafkaException(KafkaError(code, "Failed to get committed offsets"))
        return "offsets"

    return calls, call


def test_not_coordinator_on_a_fresh_broker_is_retried(caplog: pytest.LogCaptureFixture) -> None:
    calls, call = _failing(2, KafkaError.NOT_COORDINATOR)
    assert call_with_retry("archiver: reading committed offsets", call) == "offsets"  # type: ignore[arg-type]
    assert len(calls) == 3
    assert "NOT_COORDINATOR" in caplog.text and "retrying" in caplog.text


def test_other_errors_are_raised_at_once() -> None:
    calls, call = _failing(5, KafkaError.TOPIC_AUTHORIZATION_FAILED)
    with pytest.raises(KafkaException):
        call_with_retry("x", call)  # type: ignore[arg-type]
    assert len(calls) == 1
    assert not is_retriable(ValueError("not kafka"))


def test_retries_stop_after_the_deadline() -> None:
    calls, call = _failing(1000, KafkaError.COORDINATOR_LOAD_IN_PROGRESS)
    with pytest.raises(KafkaException):
        call_with_retry("x", call, retry_seconds=0.5)  # type: ignore[arg-type]
    assert 1 < len(calls) < 20
