"""In-memory FeatureReader: dictionaries standing in for the online store, for tests."""

from __future__ import annotations

from collections.abc import Sequence

from api.ports import HourActivity, ItemStats, LongInterests, PortUnavailable, RecentItems


class InMemoryFeatureReader:
    """Also the cockpit's reader (``CockpitFeatures``): hour windows and long interests."""

    def __init__(self) -> None:
        self.users: dict[str, RecentItems] = {}
        self.items: dict[str, ItemStats] = {}
        self.hours: dict[str, HourActivity] = {}
        self.interests: dict[str, LongInterests] = {}
        # Set to a message to make every read fail with it.
        self.failure: str | None = None
        self.item_reads = 0

    async def user_recent(self, user_id: str) -> RecentItems | None:
        self._check()
        return self.users.get(user_id)

    async def item_stats(self, item_ids: Sequence[str]) -> dict[str, ItemStats]:
        self._check()
        self.item_reads += 1
        return {item_id: self.items[item_id] for item_id in item_ids if item_id in self.items}

    async def ping(self) -> None:
        self._check()

    async def item_hours(self, item_ids: Sequence[str]) -> dict[str, HourActivity]:
        self._check()
        return {item_id: self.hours[item_id] for item_id in item_ids if item_id in self.hours}

    async def user_interests(self, user_id: str) -> LongInterests | None:
        self._check()
        return self.interests.get(user_id)

    def _check(self) -> None:
        if self.failure is not None:
            raise PortUnavailable(self.failure)
