"""Where the worker writes: the Feast online store, the "user changed" notice and the
ledger of changed item rows.

Narrow interfaces, one real adapter each, and in-memory adapters for unit tests.
Both real adapters block (Feast and redis-py are synchronous); agents call them from a
thread so the event loop keeps consuming.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, Protocol

from streamrec.infra.notify import changed_message, item_changes_key, user_changed_channel

USER_PUSH_SOURCE = "user_recent_push"
ITEM_PUSH_SOURCE = "item_stats_push"


class FeatureSink(Protocol):
    def push(self, push_source: str, columns: dict[str, list[Any]]) -> None: ...


class ChangeNotifier(Protocol):
    def users_changed(self, user_ids: Iterable[str]) -> None: ...

    def items_changed(self, item_ids: Iterable[str]) -> None: ...


class FeastFeatureSink:
    """Writes the rows of a Feast push source to the views it feeds, in the online store.

    ``streamrec.infra.feast_store.OnlineWriter`` says why this is not ``FeatureStore.push``.
    """

    def __init__(self, store: Any) -> None:
        from streamrec.infra.feast_store import OnlineWriter

        self._writer = OnlineWriter(store)

    def push(self, push_source: str, columns: dict[str, list[Any]]) -> None:
        self._writer.write(push_source, columns)


class RedisChangeNotifier:
    def __init__(self, redis_url: str, topic_prefix: str) -> None:
        import redis

        self._client = redis.Redis.from_url(redis_url)
        self._channel = user_changed_channel(topic_prefix)
        self._prefix = topic_prefix
        self._marked = False  # readiness marker, written with the first notification

    def users_changed(self, user_ids: Iterable[str]) -> None:
        from streamrec.infra.readiness import mark_pushed, note_push

        pipe = self._client.pipeline(transaction=False)
        if not self._marked:
            mark_pushed(pipe, self._prefix, "worker")
        note_push(pipe, self._prefix)
        users = list(user_ids)
        if users:
            pipe.publish(self._channel, changed_message(users))
        pipe.execute()
        self._marked = True  # only once the marker is surely written

    def items_changed(self, item_ids: Iterable[str]) -> None:
        """Score each item with now (ms) in the ledger, after its row was written: one
        member per item, so the set stays as large as the catalogue."""
        now_ms = time.time() * 1000.0
        scored = dict.fromkeys(item_ids, now_ms)
        if scored:
            self._client.zadd(item_changes_key(self._prefix), scored)


class InMemoryFeatureSink:
    """Keeps the latest row per entity, as an online store would."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, dict[str, Any]]] = {}
        self.pushes = 0

    def push(self, push_source: str, columns: dict[str, list[Any]]) -> None:
        key = "user_id" if "user_id" in columns else "item_id"
        table = self.rows.setdefault(push_source, {})
        names = list(columns)
        for values in zip(*columns.values(), strict=True):
            row = dict(zip(names, values, strict=True))
            table[row[key]] = row
        self.pushes += 1


class InMemoryChangeNotifier:
    def __init__(self) -> None:
        self.notices: list[str] = []
        self.items: list[str] = []

    def users_changed(self, user_ids: Iterable[str]) -> None:
        self.notices.extend(user_ids)

    def items_changed(self, item_ids: Iterable[str]) -> None:
        self.items.extend(item_ids)
