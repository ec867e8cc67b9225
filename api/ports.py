"""The narrow interfaces the HTTP service depends on; adapters live in ``api/adapters/``.

Each port has an in-memory adapter (tests, no-Redis mode) and a real one (Feast, Kafka,
Redis pub/sub). Every adapter passes the same contract suite in
``tests/unit/api/contracts.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from api.cockpit_features import HourActivity, LongInterests
from serving.features import ItemStats, RecentItems
from streams.events import Event

__all__ = [
    "ChangeFeed",
    "CockpitFeatures",
    "HourActivity",
    "LongInterests",
    "EventSink",
    "EventSinkError",
    "FeatureReader",
    "ItemChanges",
    "ItemStats",
    "PortUnavailable",
    "RecentItems",
    "Subscription",
]


class PortUnavailable(RuntimeError):
    """A backing service (store, broker, pub/sub) did not answer; the message says which."""


class EventSinkError(PortUnavailable):
    """An event was not confirmed as written; the caller must not report it as accepted."""


@dataclass(frozen=True)
class ItemChanges:
    """The items whose rows were written at or after the asked time, and the latest write
    time the ledger holds (ms, the writer's clock: only compared with its own times)."""

    item_ids: tuple[str, ...]
    latest_ms: float


class FeatureReader(Protocol):
    async def user_recent(self, user_id: str) -> RecentItems | None:
        """The user's recent items and counts, or None for a user the store has never seen."""
        ...

    async def item_stats(self, item_ids: Sequence[str]) -> dict[str, ItemStats]:
        """Stats of the given items; items the store does not know are left out."""
        ...

    async def item_changes(self, since_ms: float | None) -> ItemChanges | None:
        """The items written at or after ``since_ms`` (None: only the latest write time);
        None when this store keeps no ledger of changed items: every row must be read."""
        ...

    async def ping(self) -> None:
        """Return when the store answers; raise PortUnavailable otherwise."""
        ...


@runtime_checkable
class CockpitFeatures(Protocol):
    """What the cockpit page reads beyond a request's features: the hour windows of items
    and the long-window interests of a user."""

    async def item_hours(self, item_ids: Sequence[str]) -> dict[str, HourActivity]:
        """The hour windows of the given items; items without any are left out."""
        ...

    async def user_interests(self, user_id: str) -> LongInterests | None:
        """The user's category interests over the Spark job's long window, or None."""
        ...


class EventSink(Protocol):
    async def publish(self, event: Event) -> None:
        """Return once the event is durably written; raise EventSinkError otherwise."""
        ...

    async def ping(self) -> None:
        """Return when the log accepts writes; raise PortUnavailable otherwise."""
        ...


class Subscription(Protocol):
    async def changed(self) -> None:
        """Wait for the next "user changed" notice; notices that pile up are coalesced."""
        ...


class ChangeFeed(Protocol):
    def subscribe(self, user_id: str) -> AbstractAsyncContextManager[Subscription]:
        """Notices for one user while the context is open; leaving it unsubscribes."""
        ...

    def subscriber_count(self, user_id: str | None = None) -> int:
        """Open subscriptions, for one user or in total."""
        ...

    async def ping(self) -> None:
        """Return when notices can arrive; raise PortUnavailable otherwise."""
        ...
