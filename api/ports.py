"""The narrow interfaces the HTTP service depends on; adapters live in ``api/adapters/``.

Each port has an in-memory adapter (tests, no-Redis mode) and a real one (Feast, Kafka,
Redis pub/sub). Every adapter passes the same contract suite in
``tests/unit/api/contracts.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from streams.events import Event


@dataclass(frozen=True)
class RecentItems:
    """What a user did last, newest first; ``times`` (epoch ms) is parallel to ``items``.

    ``interaction_count`` counts every interaction the user ever had (``items`` keeps only
    the latest few) and ``last_event_time`` is the newest one's time; None where a store
    does not hold them. Both feed the user context features of the ranking model.
    """

    items: tuple[str, ...]
    times: tuple[int, ...]
    interaction_count: int | None = None
    last_event_time: int | None = None
    # Every item the user ever interacted with (``streamrec.infra.seen``): never recommended.
    # Empty where a store does not keep it; ``items`` are excluded in any case.
    seen: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ItemStats:
    """Running counts of one item, as the stream worker folds them."""

    interaction_count: int = 0
    click_count: int = 0
    purchase_count: int = 0
    last_event_time: int | None = None
    trend_score: float = 0.0  # decayed interaction count as of last_event_time


class PortUnavailable(RuntimeError):
    """A backing service (store, broker, pub/sub) did not answer; the message says which."""


class EventSinkError(PortUnavailable):
    """An event was not confirmed as written; the caller must not report it as accepted."""


class FeatureReader(Protocol):
    async def user_recent(self, user_id: str) -> RecentItems | None:
        """The user's recent items and counts, or None for a user the store has never seen."""
        ...

    async def item_stats(self, item_ids: Sequence[str]) -> dict[str, ItemStats]:
        """Stats of the given items; items the store does not know are left out."""
        ...

    async def ping(self) -> None:
        """Return when the store answers; raise PortUnavailable otherwise."""
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
