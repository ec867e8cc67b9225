"""FeatureReader whose per-request read is one Redis round trip on the event loop.

``GET /recommend`` needs the user's ``user_recent`` row and the set of items the user has
seen. Through Feast these were two blocking reads in a worker thread (the Feast read
alone milliseconds of Python). Here both go in one pipeline of redis-py's asyncio client:
an ``HMGET`` of the row in Feast's layout (``streamrec.infra.feast_redis.RedisRowReader``,
Feast's keys and decoding) and the ``SMEMBERS`` of the seen set. Item rows are not read
per request but refreshed in the background (``api.state``); that refresh is pipelined
``HMGET``s too (``ITEM_BATCH`` rows a round trip): through Feast it was most of an idle
API's CPU, and grows with the catalogue; a row whose bytes did not change since the last
read is not decoded again. Between full reads the refresh reads only the rows the worker's
ledger of changed items names (``item_changes``: a sorted set, ``ZRANGEBYSCORE``). ``ping``
stays with the Feast reader. The contract suite of ``FeatureReader`` runs on both adapters
against the worker's rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from api.adapters.feast_features import (
    ITEM_BATCH,
    FeastFeatureReader,
    item_stats_of,
    recent_items,
)
from api.ports import ItemChanges, ItemStats, PortUnavailable, RecentItems
from streamrec.infra.feast_redis import RedisRowReader
from streamrec.infra.notify import item_changes_key
from streamrec.infra.seen import seen_key


class RedisFeatureReader:
    def __init__(
        self,
        client: aioredis.Redis,
        user_rows: RedisRowReader,
        item_rows: RedisRowReader,
        feast: FeastFeatureReader,
        topic_prefix: str,
    ) -> None:
        self._client = client
        self._rows = user_rows
        self._item_rows = item_rows
        self._feast = feast
        self._prefix = topic_prefix
        # Each item's stored bytes at the last read and what they decoded to: an unchanged
        # row is handed back as the same object, which the item features' rebuild skips
        # (``serving.cascade.ItemFeatures.build``), and is not decoded again.
        self._decoded: dict[str, tuple[tuple[bytes | bool | None, ...], ItemStats | None]] = {}

    @classmethod
    def over(
        cls, feast: FeastFeatureReader, redis_url: str, topic_prefix: str
    ) -> RedisFeatureReader:
        """The reader of ``feast``'s store (a plain Redis one) at ``redis_url``: the
        ``user_recent`` and ``item_stats`` views' rows in Feast's layout, under the views'
        current names."""
        from feast.infra.online_stores.helpers import compute_versioned_name

        from feature_repo.definitions import item_stats, user_recent
        from feature_repo.fields import RECOMMEND_COVISIT, RECOMMEND_ITEM, USER_RECENT

        config = feast.store.config
        versioned = config.registry.enable_online_feature_view_versioning
        users = RedisRowReader(
            config, compute_versioned_name(user_recent, versioned), "user_id", list(USER_RECENT)
        )
        items = RedisRowReader(
            config,
            compute_versioned_name(item_stats, versioned),
            "item_id",
            [*RECOMMEND_ITEM, *RECOMMEND_COVISIT],
        )
        return cls(aioredis.Redis.from_url(redis_url), users, items, feast, topic_prefix)

    async def user_recent(self, user_id: str) -> RecentItems | None:
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                # Feast's keys are bytes (redis-py takes them; its stubs say str).
                pipe.hmget(self._rows.key(user_id), self._rows.fields)  # type: ignore[arg-type]
                pipe.smembers(seen_key(self._prefix, user_id))
                values, seen = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise PortUnavailable(f"online store read failed: {type(exc).__name__}: {exc}") from exc
        row: dict[str, Any] | None = self._rows.decode(values)
        if row is None:
            return None
        return recent_items(row, frozenset(member.decode() for member in seen))

    async def item_changes(self, since_ms: float | None) -> ItemChanges | None:
        key = item_changes_key(self._prefix)
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.zrevrange(key, 0, 0, withscores=True)  # the latest write
                if since_ms is not None:
                    pipe.zrangebyscore(key, since_ms, "+inf")
                answers = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise PortUnavailable(f"online store read failed: {type(exc).__name__}: {exc}") from exc
        latest = float(answers[0][0][1]) if answers[0] else 0.0
        changed = tuple(member.decode() for member in answers[1]) if since_ms is not None else ()
        return ItemChanges(changed, latest)

    async def item_stats(self, item_ids: Sequence[str]) -> dict[str, ItemStats]:
        found: dict[str, ItemStats] = {}
        ids = list(dict.fromkeys(item_ids))
        fields = self._item_rows.fields
        for start in range(0, len(ids), ITEM_BATCH):
            batch = ids[start : start + ITEM_BATCH]
            try:
                async with self._client.pipeline(transaction=False) as pipe:
                    for item_id in batch:
                        pipe.hmget(self._item_rows.key(item_id), fields)  # type: ignore[arg-type]
                    rows = await pipe.execute()
            except (RedisError, OSError) as exc:
                raise PortUnavailable(
                    f"online store read failed: {type(exc).__name__}: {exc}"
                ) from exc
            for item_id, values in zip(batch, rows, strict=True):
                # The features' bytes, and whether the row exists: not the row's timestamp
                # (the last field), which moves on every write, also when only a field the
                # API does not read changed (an impression served): the same object back.
                raw = (*values[:-1], values[-1] is None)
                cached = self._decoded.get(item_id)
                if cached is not None and cached[0] == raw:
                    stats = cached[1]
                else:
                    row = self._item_rows.decode(values)
                    stats = item_stats_of(row) if row is not None else None
                    self._decoded[item_id] = (raw, stats)
                if stats is not None:
                    found[item_id] = stats
        return found

    async def ping(self) -> None:
        await self._feast.ping()

    async def close(self) -> None:
        await self._client.aclose()
