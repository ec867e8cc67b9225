"""Who may write events and how fast: optional ingest keys and a per-client rate limit for
``POST /events``.

With ``STREAMREC_INGEST_KEYS`` set, a request must carry one of the keys in ``X-Ingest-Key``
(401 without, 403 with a wrong one; compared in constant time). The rate limit
(``STREAMREC_EVENTS_RATE_LIMIT``, moving window, from the ``limits`` library) counts per
client: its key when keys are configured, else its address.

The counts live in Redis when the API serves from Redis (``limits``' asyncio Redis storage
over redis-py, keys under the topic prefix), so the several processes of
``streamrec serve --workers N`` and the replicas of a deployment share one limit; in this
process otherwise (tests, ``STREAMREC_REDIS_URL=none``). Counting is asynchronous either
way: the synchronous in-memory storage started a timer thread every 10 ms under load. If
Redis does not answer, the event is admitted (the log, not the limiter, is what must not
be lost) and the failure is logged once until the limiter works again.
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
import time
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader
from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError

from streamrec.settings import Settings

logger = logging.getLogger(__name__)

# Makes the storage of the counts; called on the event loop (the in-memory one needs it).
CountStorage = Callable[[], Storage]

INGEST_KEY_HEADER = "X-Ingest-Key"
_ingest_key_header = APIKeyHeader(name=INGEST_KEY_HEADER, auto_error=False)


def redis_counts(redis_url: str, topic_prefix: str) -> CountStorage:
    """Counts shared by every API process, in the Redis at ``redis_url``."""
    return lambda: RedisStorage(
        "async+" + redis_url,
        implementation="redispy",
        key_prefix=f"{topic_prefix}limits",
        wrap_exceptions=True,  # as limits.errors.StorageError
    )


def memory_counts() -> Storage:
    """Counts of this process alone."""
    return MemoryStorage()


class IngestGuard:
    def __init__(self, settings: Settings, counts: CountStorage = memory_counts) -> None:
        self._keys = [key.encode() for key in sorted(settings.ingest_key_set)]
        spec = settings.events_rate_limit.strip()
        self._limits: list[RateLimitItem] = parse_many(spec) if spec else []
        self._counts = counts
        self._limiter: MovingWindowRateLimiter | None = None
        self._failing = False

    async def admit(self, presented: str | None, address: str) -> None:
        """Return when the client may write one event; raise 401/403/429 otherwise."""
        client = self._client(presented, address)
        if not self._limits:
            return
        if self._limiter is None:
            self._limiter = MovingWindowRateLimiter(self._counts())
        for limit in self._limits:
            try:
                admitted = await self._limiter.hit(limit, client)
                reset_at = (
                    0.0 if admitted else (await self._limiter.get_window_stats(limit, client))[0]
                )
            except StorageError as exc:
                self._report(exc)
                return
            self._report(None)
            if not admitted:
                retry = max(1, math.ceil(reset_at - time.time()))
                raise HTTPException(
                    status.HTTP_429_TOO_MANY_REQUESTS,
                    f"rate limit of {limit} events per client exceeded; retry in {retry}s",
                    headers={"Retry-After": str(retry)},
                )

    def _report(self, error: Exception | None) -> None:
        if error is not None and not self._failing:
            logger.warning("rate limiter unavailable, admitting events unlimited: %s", error)
        elif error is None and self._failing:
            logger.warning("rate limiter available again")
        self._failing = error is not None

    def _client(self, presented: str | None, address: str) -> str:
        if not self._keys:
            return f"address:{address}"
        if not presented:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                f"missing {INGEST_KEY_HEADER} header",
                headers={"WWW-Authenticate": INGEST_KEY_HEADER},
            )
        given = presented.encode()
        # Compare against every key, so the time taken does not say which one nearly matched.
        matches = [secrets.compare_digest(given, key) for key in self._keys]
        if not any(matches):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"invalid {INGEST_KEY_HEADER}")
        return "key:" + hashlib.sha256(given).hexdigest()[:16]


async def admit_ingest(
    request: Request, presented: Annotated[str | None, Depends(_ingest_key_header)]
) -> None:
    guard: IngestGuard = request.app.state.ingest_guard
    address = request.client.host if request.client is not None else "unknown"
    await guard.admit(presented, address)


IngestAdmission = Depends(admit_ingest)
