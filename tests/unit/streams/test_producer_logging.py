"""librdkafka's log lines reach Python logging, not the process's stderr."""

from __future__ import annotations

import logging
import time

import pytest

from streams.events import Topics
from streams.producer import LIBRDKAFKA_LOGGER, EventProducer


def test_a_refused_connection_is_logged_through_python_logging(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.ERROR, logger="librdkafka")
    # Port 1 refuses connections: librdkafka reports it from its broker thread.
    with EventProducer("127.0.0.1:1", Topics("test."), **{"reconnect.backoff.ms": 50}):
        deadline = time.monotonic() + 10
        while not caplog.records and time.monotonic() < deadline:
            time.sleep(0.05)
    refused = [r for r in caplog.records if r.name == "librdkafka"]
    assert refused and "Connection refused" in refused[0].getMessage()
    assert "Connection refused" not in capfd.readouterr().err


def test_a_coordinator_still_loading_is_logged_at_debug_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    message = (
        "GETPID [rdkafka#producer-2] [thrd:main]: Failed to acquire idempotence PID from "
        "broker 127.0.0.1:9092/1: Broker: Coordinator load in progress: retrying"
    )
    caplog.set_level(logging.INFO, logger="librdkafka")
    LIBRDKAFKA_LOGGER.warning(message)
    LIBRDKAFKA_LOGGER.warning("Connection refused")
    assert [r.getMessage() for r in caplog.records] == ["Connection refused"]

    caplog.clear()
    caplog.set_level(logging.DEBUG, logger="librdkafka")
    LIBRDKAFKA_LOGGER.warning(message)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [("DEBUG", message)]
