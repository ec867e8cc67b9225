"""The online store's readiness marker: "features for this project have been pushed".

Redis restarted empty (or wiped) still answers PING, so a ping alone cannot tell an empty
online store from a populated one. Whoever fills the store — the stream worker after a push,
``streamrec backfill`` after a replay — calls ``mark_pushed``; the API's readiness check
calls ``features_status`` and reports the features not ready while the marker is missing.
A wipe removes the marker together with the features, so readiness follows the data.

The store is anything with Redis's ``get``/``set`` (redis-py's client, or a dict-backed
fake in unit tests); the marker is one small JSON value per topic prefix.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any, Protocol

MARKER_SUFFIX = "features_pushed"
LAST_PUSH_SUFFIX = "features_last_push"


class KeyValue(Protocol):
    def get(self, name: str) -> Any: ...

    def set(self, name: str, value: str) -> Any: ...


@dataclass(frozen=True)
class FeaturesStatus:
    ready: bool
    detail: str


def marker_key(topic_prefix: str) -> str:
    if not topic_prefix:
        raise ValueError("topic_prefix must not be empty")
    return f"{topic_prefix}{MARKER_SUFFIX}"


def last_push_key(topic_prefix: str) -> str:
    marker_key(topic_prefix)  # the same check of the prefix
    return f"{topic_prefix}{LAST_PUSH_SUFFIX}"


def note_push(store: KeyValue, topic_prefix: str, now: float | None = None) -> None:
    """Record the wall-clock time of the latest push. The marker itself keeps the time of
    the first push after the store was filled (it is written once per worker, so a wipe
    stays visible); readiness reports the age of the latest push, wall clock against wall
    clock, so "pushed 650s ago" never describes a worker that pushed a second ago."""
    store.set(last_push_key(topic_prefix), repr(time.time() if now is None else now))


def mark_pushed(store: KeyValue, topic_prefix: str, source: str, now: float | None = None) -> None:
    """Record that ``source`` (``worker`` or ``backfill``) has pushed features."""
    if not source:
        raise ValueError("source must name who pushed (worker, backfill)")
    at = time.time() if now is None else now
    store.set(marker_key(topic_prefix), json.dumps({"source": source, "at": at}))


def features_status(store: KeyValue, topic_prefix: str, now: float | None = None) -> FeaturesStatus:
    """Ready when the marker exists; not ready, with the reason, when it is missing or
    unreadable (an empty or wiped online store)."""
    raw = store.get(marker_key(topic_prefix))
    if raw is None:
        return FeaturesStatus(
            False,
            f"no features pushed for {topic_prefix!r} (online store empty or wiped); "
            "run the worker or `streamrec backfill --from-beginning`",
        )
    try:
        marker = json.loads(raw)
        source, at = str(marker["source"]), float(marker["at"])
    except (ValueError, TypeError, KeyError) as exc:
        return FeaturesStatus(False, f"unreadable readiness marker {raw!r}: {exc}")
    clock = time.time() if now is None else now
    latest = at
    raw_last = store.get(last_push_key(topic_prefix))
    # An unreadable last-push time leaves the marker's own time.
    if raw_last is not None:
        with contextlib.suppress(TypeError, ValueError):
            latest = max(at, float(raw_last))
    return FeaturesStatus(
        True, f"features pushed by {source}, last push {max(clock - latest, 0.0):.0f}s ago"
    )


def redis_store(redis_url: str, timeout_seconds: float = 2.0) -> KeyValue:
    """A redis-py client for the marker, with short timeouts (a readiness check must not hang)."""
    import redis

    client: KeyValue = redis.Redis.from_url(
        redis_url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds
    )
    return client
