"""In-memory FeatureReader: dictionaries standing in for the online store, for tests."""

from __future__ import annotations

from collections.abc import Sequence

from api.ports import (
    HourActivity,
    ItemChanges,
    ItemStats,
    LongInterests,
    PortUnavailable,
    RecentItems,
)


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
        self.items_read: list[str] = []  # every item_id read, in order
        # The ledger of changed items (item_id -> write time, ms), as the worker keeps it;
        # None: no ledger, the state reads every item (a test that sets ``items`` alone).
        self.changes: dict[str, float] | None = None

    async def user_recent(self, user_id: str) -> RecentItems | None:
        self._check()
        return self.users.get(user_id)

    async def item_stats(self, item_ids: Sequence[str]) -> dict[str, ItemStats]:
        self._check()
        self.item_reads += 1
        self.items_read.extend(item_ids)
        return {item_id: self.items[item_id] for item_id in item_ids if item_id in self.items}

    def write_item(self, item_id: str, stats: ItemStats, at_ms: float) -> None:
        """A row written as the worker writes it: the row, then its ledger entry."""
        self.items[item_id] = stats
        if self.changes is None:
            self.changes = {}
        self.changes[item_id] = at_ms

    async def item_changes(self, since_ms: float | None) -> ItemChanges | None:
        self._check()
        if self.changes is None:
            return None
        latest = max(self.changes.values(), default=0.0)
        if since_ms is None:
            return ItemChanges((), latest)
        changed = sorted((at, item) for item, at in self.changes.items() if at >= since_ms)
        return ItemChanges(tuple(item for _, item in changed), latest)

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
