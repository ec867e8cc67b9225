"""FeatureReader whose per-request read is one Redis round trip on the event loop.

``GET /recommend`` needs the user's ``user_recent`` row and the set of items the user has
seen. Through Feast these were two blocking reads in a worker thread (the Feast read
alone milliseconds of Python). Here both go in one pipeline of redis-py's asyncio client:
an ``HMGET`` of the row in Feast's layout (``streamrec.infra.feast_redis.RedisRowReader``,
Feast's keys and decoding) and the ``SMEMBERS`` of the seen set. Item rows are not read
per request (the API refreshes them in the background, ``api.state``), so ``item_stats``
and ``ping`` stay with the Feast reader. The contract suite of ``FeatureReader`` runs on
both adapters against the worker's rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from api.adapters.feast_features import FeastFeatureReader, recent_items
from api.ports import ItemStats, PortUnavailable, RecentItems
from streamrec.infra.feast_redis import RedisRowReader
from streamrec.infra.seen import seen_key


class RedisFeatureReader:
    def __init__(
        self,
        client: aioredis.Redis,
        user_rows: RedisRowReader,
        feast: FeastFeatureReader,
        topic_prefix: str,
    ) -> None:
        self._client = client
        self._rows = user_rows
        self._feast = feast
        self._prefix = topic_prefix

    @classmethod
    def over(
        cls, feast: FeastFeatureReader, redis_url: str, topic_prefix: str
    ) -> RedisFeatureReader:
        """The reader of ``feast``'s store (a plain Redis one) at ``redis_url``: the
        ``user_recent`` view's rows in Feast's layout, under the view's current name."""
        from feast.infra.online_stores.helpers import compute_versioned_name

        from feature_repo.definitions import user_recent
        from feature_repo.fields import USER_RECENT

        config = feast.store.config
        view = compute_versioned_name(
            user_recent, config.registry.enable_online_feature_view_versioning
        )
        rows = RedisRowReader(config, view, "user_id", list(USER_RECENT))
        return cls(aioredis.Redis.from_url(redis_url), rows, feast, topic_prefix)

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

    async def item_stats(self, item_ids: Sequence[str]) -> dict[str, ItemStats]:
        return await self._feast.item_stats(item_ids)

    async def ping(self) -> None:
        await self._feast.ping()

    async def close(self) -> None:
        await self._client.aclose()
