"""Fan-out of "user changed" notices to the open subscriptions of that user.

Shared by every ChangeFeed adapter: the adapter decides where notices come from, this
decides who hears them. Each subscription holds a one-slot queue, so a burst of notices
for one user wakes a slow client once instead of queueing without bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class QueueSubscription:
    def __init__(self) -> None:
        self._queue: asyncio.Queue[None] = asyncio.Queue(maxsize=1)

    def notify(self) -> None:
        if self._queue.empty():
            self._queue.put_nowait(None)

    async def changed(self) -> None:
        await self._queue.get()


class UserChangeHub:
    def __init__(self) -> None:
        self._subscriptions: dict[str, set[QueueSubscription]] = {}

    @asynccontextmanager
    async def subscribe(self, user_id: str) -> AsyncIterator[QueueSubscription]:
        subscription = QueueSubscription()
        self._subscriptions.setdefault(user_id, set()).add(subscription)
        try:
            yield subscription
        finally:
            subscribers = self._subscriptions.get(user_id)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._subscriptions[user_id]

    def notify(self, user_id: str) -> int:
        """Wake every subscription of ``user_id``; returns how many there were."""
        subscribers = self._subscriptions.get(user_id, ())
        for subscription in subscribers:
            subscription.notify()
        return len(subscribers)

    def notify_all(self) -> None:
        """Wake everyone, e.g. after a reconnect during which notices may have been lost."""
        for subscribers in self._subscriptions.values():
            for subscription in subscribers:
                subscription.notify()

    def subscriber_count(self, user_id: str | None = None) -> int:
        if user_id is not None:
            return len(self._subscriptions.get(user_id, ()))
        return sum(len(s) for s in self._subscriptions.values())
