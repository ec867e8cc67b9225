"""Who may write events and how fast: optional ingest keys and a per-client rate limit for
``POST /events``.

With ``STREAMREC_INGEST_KEYS`` set, a request must carry one of the keys in ``X-Ingest-Key``
(401 without, 403 with a wrong one; compared in constant time). The rate limit
(``STREAMREC_EVENTS_RATE_LIMIT``, moving window, from the ``limits`` library) counts per
client: its key when keys are configured, else its address. Counts live in this process,
which is the one API process per host (``api.main.run``).
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from streamrec.settings import Settings

INGEST_KEY_HEADER = "X-Ingest-Key"
_ingest_key_header = APIKeyHeader(name=INGEST_KEY_HEADER, auto_error=False)


class IngestGuard:
    def __init__(self, settings: Settings) -> None:
        self._keys = [key.encode() for key in sorted(settings.ingest_key_set)]
        spec = settings.events_rate_limit.strip()
        self._limits: list[RateLimitItem] = parse_many(spec) if spec else []
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def admit(self, presented: str | None, address: str) -> None:
        """Return when the client may write one event; raise 401/403/429 otherwise."""
        client = self._client(presented, address)
        for limit in self._limits:
            if not self._limiter.hit(limit, client):
                reset_at, _remaining = self._limiter.get_window_stats(limit, client)
                retry = max(1, math.ceil(reset_at - time.time()))
                raise HTTPException(
                    status.HTTP_429_TOO_MANY_REQUESTS,
                    f"rate limit of {limit} events per client exceeded; retry in {retry}s",
                    headers={"Retry-After": str(retry)},
                )

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
    guard.admit(presented, address)


IngestAdmission = Depends(admit_ingest)
