"""Serving one recommendation list: read the user's features, score, record what was served.

Used by both GET /recommend and the SSE stream. User features are read on every call (no
per-user cache): the stream's "user changed" notice means the store already holds the
new state, so reading it then is what makes the stream current.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict

from api.metrics import ApiMetrics
from api.ports import EventSink, EventSinkError, FeatureReader, PortUnavailable, RecentItems
from api.recommender import MODEL_VERSION, reason, recommend
from api.state import RecommenderState
from streams.events import RecommendationServed, RecommendedItem

logger = logging.getLogger(__name__)

VARIANT = "default"


class ServedLog:
    """Writes RecommendationServed events without holding up the response.

    The list is sent first and the event written in the background: a reader should not
    wait for a broker acknowledgement, nor go without recommendations when the broker is
    down. A failed write is logged and counted (``served_write_failures``), never raised.
    Also remembers the ranks of recently served lists, so a click can carry its rank.
    """

    def __init__(self, sink: EventSink, metrics: ApiMetrics, *, remember: int = 10_000) -> None:
        self._sink = sink
        self._metrics = metrics
        self._pending: set[asyncio.Task[None]] = set()
        self._ranks: OrderedDict[str, dict[str, int]] = OrderedDict()
        self._remember = remember

    def record(self, served: RecommendationServed) -> None:
        self._ranks[served.request_id] = {item.item_id: item.rank for item in served.items}
        while len(self._ranks) > self._remember:
            self._ranks.popitem(last=False)
        task = asyncio.create_task(self._write(served))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def rank_of(self, request_id: str, item_id: str) -> int | None:
        return self._ranks.get(request_id, {}).get(item_id)

    async def _write(self, served: RecommendationServed) -> None:
        try:
            await self._sink.publish(served)
        except EventSinkError as exc:
            self._metrics.served_write_failures.inc()
            logger.warning(
                "recommendations %s for user %s were sent but not logged: %s",
                served.request_id,
                served.user_id,
                exc,
            )

    async def drain(self, timeout: float | None = None) -> None:
        """Wait for writes in flight (shutdown, tests)."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=timeout)


class RecommendationService:
    def __init__(
        self,
        reader: FeatureReader,
        state: RecommenderState,
        served_log: ServedLog,
        metrics: ApiMetrics,
    ) -> None:
        self._reader = reader
        self._state = state
        self._served_log = served_log
        self._metrics = metrics

    async def recommend(self, user_id: str, k: int, *, channel: str) -> RecommendationServed:
        recent = await self._user_recent(user_id)
        state = self._state
        scored = recommend(
            recent.items if recent is not None else (),
            k,
            index=state.index,
            popularity=state.popularity,
        )
        titles = state.catalogue.titles
        served = RecommendationServed(
            request_id=uuid.uuid4().hex,
            user_id=user_id,
            variant=VARIANT,
            model_version=MODEL_VERSION,
            items=tuple(
                RecommendedItem(
                    item_id=s.item_id, rank=rank, score=round(s.score, 6), reason=reason(s, titles)
                )
                for rank, s in enumerate(scored, start=1)
            ),
        )
        kind = "personal" if recent is not None else "cold_start"
        self._metrics.recommendations.labels(kind, channel).inc()
        self._served_log.record(served)
        return served

    async def _user_recent(self, user_id: str) -> RecentItems | None:
        """The user's recent items; a store failure degrades to the cold-start list."""
        started = time.perf_counter()
        try:
            recent = await self._reader.user_recent(user_id)
        except PortUnavailable as exc:
            self._metrics.feature_read_failures.labels("user_recent").inc()
            logger.warning(
                "user features of %s unreadable, serving popular items: %s", user_id, exc
            )
            return None
        self._metrics.feature_read_seconds.labels("user_recent").observe(
            time.perf_counter() - started
        )
        return recent
