"""In-memory ChangeFeed: notices are injected by calling ``notify``.

Used by tests, and by the service when no Redis is configured (then nobody notifies and
the SSE stream sends its first list and keep-alive pings only).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

from api.adapters.fanout import QueueSubscription, UserChangeHub


class InMemoryChangeFeed:
    def __init__(self) -> None:
        self._hub = UserChangeHub()

    def subscribe(self, user_id: str) -> AbstractAsyncContextManager[QueueSubscription]:
        return self._hub.subscribe(user_id)

    def subscriber_count(self, user_id: str | None = None) -> int:
        return self._hub.subscriber_count(user_id)

    async def notify(self, user_id: str) -> None:
        self._hub.notify(user_id)

    async def ping(self) -> None:
        return None
