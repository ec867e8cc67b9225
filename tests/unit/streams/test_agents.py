"""Batch plumbing of the worker's agents."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from streams.agents import _once


def _event(topic: str, partition: int, offset: int) -> Any:
    return SimpleNamespace(message=SimpleNamespace(topic=topic, partition=partition, offset=offset))


def test_a_record_handed_over_twice_in_a_batch_is_kept_once() -> None:
    repeats = Counter("repeats", "", ["topic"], registry=CollectorRegistry())
    # Offset 7 of interactions[1] comes again after a seek; the same offset of another
    # partition or topic is a different record.
    events = [
        _event("interactions", 1, 6),
        _event("interactions", 1, 7),
        _event("interactions", 2, 7),
        _event("clicks", 1, 7),
        _event("interactions", 1, 7),
        _event("interactions", 1, 8),
    ]
    kept = _once(events, repeats)
    positions = [(e.message.topic, e.message.partition, e.message.offset) for e in kept]
    assert positions == [
        ("interactions", 1, 6),
        ("interactions", 1, 7),
        ("interactions", 2, 7),
        ("clicks", 1, 7),
        ("interactions", 1, 8),
    ]
    assert repeats.labels("interactions")._value.get() == 1
    assert repeats.labels("clicks")._value.get() == 0
