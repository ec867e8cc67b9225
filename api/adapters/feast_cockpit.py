"""CockpitFeatures over the Feast online store: the declared ``cockpit_item_v1`` and
``user_interests_v1`` services, read in a worker thread like the request features."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import anyio
from feast import FeatureStore

from api.ports import HourActivity, LongInterests, PortUnavailable
from feature_repo.definitions import cockpit_item_v1, user_interests_v1
from streamrec.infra.feast_store import service_refs

ITEM_FEATURES = service_refs(cockpit_item_v1)
USER_FEATURES = service_refs(user_interests_v1)
ITEM_BATCH = 500


class FeastCockpitReader:
    def __init__(self, store: FeatureStore) -> None:
        self._store = store
        self._limiter = anyio.CapacityLimiter(2)  # the page polls; requests come first

    async def item_hours(self, item_ids: Sequence[str]) -> dict[str, HourActivity]:
        found: dict[str, HourActivity] = {}
        ids = list(dict.fromkeys(item_ids))
        for start in range(0, len(ids), ITEM_BATCH):
            batch = ids[start : start + ITEM_BATCH]
            columns = await self._read(ITEM_FEATURES, "item_id", batch)
            for row, item_id in enumerate(batch):
                end = columns["interactions_1h_end"][row]
                spark_end = columns["window_end_1h"][row]
                if not end and spark_end is None:
                    continue
                spark = columns["trending_1h"][row]
                found[item_id] = HourActivity(
                    interactions_1h=int(columns["interactions_1h"][row] or 0),
                    end_1h=int(end or 0),
                    spark_1h=None if spark is None else float(spark),
                    spark_end_1h=None if spark_end is None else int(spark_end),
                )
        return found

    async def user_interests(self, user_id: str) -> LongInterests | None:
        columns = await self._read(USER_FEATURES, "user_id", [user_id])
        names = columns["interest_categories"][0]
        weights = columns["interest_weights"][0]
        end = columns["interests_window_end"][0]
        if not names or weights is None or end is None:
            return None
        return LongInterests(
            {str(n): round(float(w), 4) for n, w in zip(names, weights, strict=False)}, int(end)
        )

    async def _read(self, features: list[str], key: str, ids: list[str]) -> dict[str, list[Any]]:
        read = partial(
            self._store.get_online_features,
            features=features,
            entity_rows=[{key: entity_id} for entity_id in ids],
        )
        try:
            response = await anyio.to_thread.run_sync(read, limiter=self._limiter)
        except Exception as exc:  # every store failure means the same to the page
            raise PortUnavailable(f"online store read failed: {type(exc).__name__}: {exc}") from exc
        return response.to_dict()
