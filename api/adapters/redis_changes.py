"""ChangeFeed over Redis pub/sub: one connection per process, fanned out to clients.

The stream worker publishes the user_ids of a batch on ``user_changed_channel(prefix)``
after writing their features (``streamrec.infra.notify``). One listener task per process reads
the channel and wakes the subscriptions of those users; SSE clients never open Redis
connections of their own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress

from redis.asyncio import Redis
from redis.exceptions import RedisError

from api.adapters.fanout import QueueSubscription, UserChangeHub
from api.ports import PortUnavailable
from streamrec.infra.notify import changed_users

logger = logging.getLogger(__name__)

# Backoff ceiling while Redis is away: quick to come back, quiet in the log meanwhile.
MAX_RETRY_SECONDS = 15.0


class RedisChangeFeed:
    def __init__(
        self, client: Redis, channel: str, *, retry_seconds: float = 1.0, poll_seconds: float = 1.0
    ) -> None:
        self._client = client
        self._channel = channel
        self._retry_seconds = retry_seconds
        self._poll_seconds = poll_seconds
        self._hub = UserChangeHub()
        self._listening = asyncio.Event()
        self._last_error = "listener not started"
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._listen(), name="redis-user-changed")

    async def wait_listening(self, timeout: float) -> None:
        """Wait until the channel subscription is in place (tests, startup)."""
        await asyncio.wait_for(self._listening.wait(), timeout)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def subscribe(self, user_id: str) -> AbstractAsyncContextManager[QueueSubscription]:
        return self._hub.subscribe(user_id)

    def subscriber_count(self, user_id: str | None = None) -> int:
        return self._hub.subscriber_count(user_id)

    async def ping(self) -> None:
        if not self._listening.is_set():
            raise PortUnavailable(
                f"redis pub/sub {self._channel!r} not subscribed: {self._last_error}"
            )
        try:
            await self._client.ping()  # type: ignore[misc]  # redis-py types sync and async alike
        except (RedisError, OSError) as exc:
            raise PortUnavailable(f"redis ping failed: {exc}") from exc

    async def _listen(self) -> None:
        connected_before = False
        delay = self._retry_seconds
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                self._listening.set()
                if connected_before:
                    # Notices published while we were away are lost: let every client re-read.
                    self._hub.notify_all()
                connected_before = True
                delay = self._retry_seconds
                logger.info("listening for user changes on %s", self._channel)
                while True:
                    # A timeout rather than a blocking read, so redis-py's health checks run
                    # and a silently dead connection is noticed.
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=self._poll_seconds
                    )
                    if message is not None and message.get("type") == "message":
                        for user_id in changed_users(message["data"]):
                            self._hub.notify(user_id)
            except (RedisError, OSError) as exc:
                self._listening.clear()
                self._last_error = f"{type(exc).__name__}: {exc}"
                logger.warning(
                    "user-changed listener on %s lost (%s); retrying in %.1fs",
                    self._channel,
                    self._last_error,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_SECONDS)
            finally:
                with suppress(RedisError, OSError):
                    await pubsub.aclose()


@asynccontextmanager
async def open_redis_change_feed(url: str, channel: str) -> AsyncIterator[RedisChangeFeed]:
    client = Redis.from_url(url, health_check_interval=30, socket_connect_timeout=2.0)
    feed = RedisChangeFeed(client, channel)
    feed.start()
    try:
        yield feed
    finally:
        await feed.stop()
        await client.aclose()
