"""Open SSE streams: bounded, and one list computed per user change however many streams
that user has open.

Streams of the same (user, k) share one group: one "user changed" subscription and one
task that computes the list once per (debounced) change and hands it to every stream of the
group; a stream that joins late gets the group's latest list at once, without a new
computation. The group ends with its last stream.

Caps: ``sse_max_streams_per_user`` (then 429: that client should reuse a stream) and
``sse_max_streams`` in total (then 503: the instance is full, try another). They are
checked when a stream is requested; the few streams admitted in the moment before they
join their group may pass the cap by that many.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import HTTPException, status

from api.deps import Services
from api.ports import Subscription
from streams.events import RecommendationServed

logger = logging.getLogger(__name__)

DEBOUNCE_SECONDS = 0.05
DEBOUNCE_MAX_SECONDS = 0.5


class Listener:
    """One stream's view of its group: the newest list not yet sent (older ones are
    superseded, so a slow client never queues lists)."""

    def __init__(self, taken: asyncio.Event) -> None:
        self._slot: asyncio.Queue[RecommendationServed | BaseException] = asyncio.Queue(1)
        self._taken = taken

    def offer(self, item: RecommendationServed | BaseException) -> None:
        if self._slot.full():
            self._slot.get_nowait()
        self._slot.put_nowait(item)

    async def next(self) -> RecommendationServed:
        item = await self._slot.get()
        self._taken.set()
        if isinstance(item, BaseException):
            raise item
        return item


@dataclass
class _Group:
    listeners: set[Listener] = field(default_factory=set)
    latest: RecommendationServed | None = None
    task: asyncio.Task[None] | None = None
    # Set when a stream took the latest list: the next one is computed only then, so
    # notices that arrive while the lists are being sent coalesce instead of queueing work.
    taken: asyncio.Event = field(default_factory=asyncio.Event)


class StreamHub:
    def __init__(self, max_per_user: int, max_total: int) -> None:
        self.max_per_user = max_per_user
        self.max_total = max_total
        self._groups: dict[tuple[str, int], _Group] = {}
        self._per_user: Counter[str] = Counter()
        self.lists_computed = 0

    def stream_count(self, user_id: str | None = None) -> int:
        if user_id is not None:
            return self._per_user[user_id]
        return sum(self._per_user.values())

    def admit(self, user_id: str) -> None:
        """Raise 429/503 when one more stream for ``user_id`` would pass a cap."""
        if self._per_user[user_id] >= self.max_per_user:
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                f"this user already has {self.max_per_user} open streams (the limit); "
                "close one or share it",
                headers={"Retry-After": "5"},
            )
        if self.stream_count() >= self.max_total:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                f"this instance serves {self.max_total} streams (its limit); retry later",
                headers={"Retry-After": "5"},
            )

    @asynccontextmanager
    async def listen(self, services: Services, user_id: str, k: int) -> AsyncIterator[Listener]:
        key = (user_id, k)
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group()
            group.task = asyncio.create_task(
                self._produce(group, services, user_id, k), name=f"sse-lists-{k}"
            )
        listener = Listener(group.taken)
        group.listeners.add(listener)
        self._per_user[user_id] += 1
        if group.latest is not None:
            listener.offer(group.latest)
        try:
            yield listener
        finally:
            group.listeners.discard(listener)
            self._per_user[user_id] -= 1
            if self._per_user[user_id] <= 0:
                del self._per_user[user_id]
            if not group.listeners and self._groups.get(key) is group:
                del self._groups[key]
                if group.task is not None:
                    group.task.cancel()

    async def _produce(self, group: _Group, services: Services, user_id: str, k: int) -> None:
        try:
            # Subscribe before the first read, so a change between the two is not missed.
            async with services.changes.subscribe(user_id) as subscription:
                noticed: float | None = None  # when the notice behind this update came
                while True:
                    served = await services.recommendations.recommend(user_id, k, channel="sse")
                    if noticed is not None:
                        services.metrics.sse_update_seconds.observe(time.monotonic() - noticed)
                    self.lists_computed += 1
                    group.latest = served
                    group.taken.clear()
                    for listener in group.listeners:
                        listener.offer(served)
                    await group.taken.wait()
                    await subscription.changed()
                    noticed = time.monotonic()
                    await _debounce(subscription)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The streams end with the error (as a single stream did before groups).
            logger.warning("SSE list for one user failed: %s", exc)
            for listener in group.listeners:
                listener.offer(exc)


async def _debounce(subscription: Subscription) -> None:
    """Wait until the notices pause for ``DEBOUNCE_SECONDS``, at most
    ``DEBOUNCE_MAX_SECONDS``, so a burst of changes costs one list."""
    deadline = time.monotonic() + DEBOUNCE_MAX_SECONDS
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            await asyncio.wait_for(subscription.changed(), min(DEBOUNCE_SECONDS, remaining))
        except TimeoutError:
            return
