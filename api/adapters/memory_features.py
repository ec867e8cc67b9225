"""In-memory FeatureReader: dictionaries standing in for the online store, for tests."""

from __future__ import annotations

from collections.abc import Sequence

from api.ports import ItemStats, PortUnavailable, RecentItems


class InMemoryFeatureReader:
    def __init__(self) -> None:
        self.users: dict[str, RecentItems] = {}
        self.items: dict[str, ItemStats] = {}
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

    def _check(self) -> None:
        if self.failure is not None:
            raise PortUnavailable(self.failure)
