"""FeatureReader over the Feast online store (Redis, or SQLite when no Redis is set).

``FeatureStore.get_online_features`` blocks, so every read runs in a worker thread, and a
capacity limiter keeps a burst of requests from taking every thread of the pool.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, TypeVar

import anyio
from feast import FeatureStore

from api.ports import ItemChanges, ItemStats, PortUnavailable, RecentItems
from feature_repo.definitions import recommend_covisit_v1, recommend_item_v1, recommend_user_v1
from streamrec.infra.feast_store import service_refs
from streamrec.infra.seen import RedisSeenItems

T = TypeVar("T")

# What a request reads: the declared feature services (feature_repo/definitions.py).
USER_FEATURES = service_refs(recommend_user_v1)
ITEM_FEATURES = service_refs(recommend_item_v1)
# Each item's co-visited neighbours, read with its counts (the cascade's co-visitation).
COVISIT_FEATURES = service_refs(recommend_covisit_v1)
# Entity rows per online read: Redis answers a few hundred keys in one round trip quickly,
# and a bounded batch keeps one refresh from holding a thread for long.
ITEM_BATCH = 500
# A user id no one has: reading it proves the store answers without touching real rows.
PING_USER = "__streamrec_readyz__"


class FeastFeatureReader:
    def __init__(
        self, store: FeatureStore, *, seen: RedisSeenItems | None = None, max_threads: int = 8
    ) -> None:
        self._store = store
        self._seen = seen
        self._limiter = anyio.CapacityLimiter(max_threads)

    @property
    def store(self) -> FeatureStore:
        return self._store

    async def user_recent(self, user_id: str) -> RecentItems | None:
        columns, seen = await self._run(partial(self._read_user, user_id))
        return recent_items({name: values[0] for name, values in columns.items()}, seen)

    def _read_user(self, user_id: str) -> tuple[dict[str, list[Any]], frozenset[str]]:
        """The user's features and seen set, in one trip to the thread pool."""
        columns = self._read(USER_FEATURES, "user_id", [user_id])
        seen = self._seen.read(user_id) if self._seen is not None else frozenset()
        return columns, seen

    async def item_changes(self, since_ms: float | None) -> ItemChanges | None:
        """None: through Feast (or its SQLite store) there is no ledger to read; the plain
        Redis reader (``api.adapters.redis_features``) reads the worker's."""
        return None

    async def item_stats(self, item_ids: Sequence[str]) -> dict[str, ItemStats]:
        found: dict[str, ItemStats] = {}
        ids = list(dict.fromkeys(item_ids))
        for start in range(0, len(ids), ITEM_BATCH):
            batch = ids[start : start + ITEM_BATCH]
            refs = ITEM_FEATURES + COVISIT_FEATURES
            columns = await self._run(partial(self._read, refs, "item_id", batch))
            for row, item_id in enumerate(batch):
                stats = item_stats_of({name: values[row] for name, values in columns.items()})
                if stats is not None:
                    found[item_id] = stats
        return found

    async def ping(self) -> None:
        await self._run(partial(self._read, USER_FEATURES, "user_id", [PING_USER]))

    def _read(self, features: list[str], key: str, ids: list[str]) -> dict[str, list[Any]]:
        response = self._store.get_online_features(
            features=features, entity_rows=[{key: entity_id} for entity_id in ids]
        )
        return response.to_dict()

    async def _run(self, read: Callable[[], T]) -> T:
        try:
            return await anyio.to_thread.run_sync(read, limiter=self._limiter)
        except PortUnavailable:
            raise
        except Exception as exc:
            # Feast surfaces store failures as many types (redis, sqlite, registry errors);
            # every one of them means the same thing to the API: the store did not answer.
            raise PortUnavailable(f"online store read failed: {type(exc).__name__}: {exc}") from exc


def item_stats_of(row: dict[str, Any]) -> ItemStats | None:
    """An item's row of ``recommend_item_v1`` and ``recommend_covisit_v1`` (feature name
    to value, None where missing) as ItemStats; None when the item has no row."""
    count = row.get("interaction_count")
    if count is None:
        return None
    return ItemStats(
        interaction_count=int(count),
        click_count=int(row.get("click_count") or 0),
        purchase_count=int(row.get("purchase_count") or 0),
        last_event_time=_int_or_none(row.get("last_event_time")),
        trend_score=float(row.get("trend_score") or 0.0),
        covisit_items=tuple(str(i) for i in row.get("covisit_items") or ()),
        covisit_weights=tuple(int(w) for w in row.get("covisit_weights") or ()),
        covisit_total=int(row.get("covisit_total") or 0),
    )


def recent_items(row: dict[str, Any], seen: frozenset[str]) -> RecentItems | None:
    """A user's ``user_recent`` row (feature name to value) as RecentItems; None when the
    row has no recent items (an unknown user)."""
    items = row.get("recent_items")
    if not items:
        return None
    return RecentItems(
        items=tuple(str(item) for item in items),
        times=tuple(int(t) for t in row.get("recent_times") or []),
        interaction_count=_int_or_none(row.get("interaction_count")),
        last_event_time=_int_or_none(row.get("last_event_time")),
        seen=seen,
    )


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)
