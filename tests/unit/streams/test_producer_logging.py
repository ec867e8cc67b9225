"""librdkafka's log lines reach Python logging, not the process's stderr."""

from __future__ import annotations

import logging
import time

import pytest

from streams.events import Topics
from streams.producer import EventProducer


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
