"""Serving one recommendation list: read the user's features, score, record what was served.

Scored by the champion cascade when a model set is loaded (``serving/cascade.py``): a set
becomes champion only by beating the live baselines (the registry gate). Without one, the
best baseline serves, the live item-kNN (``api/serving/baseline.py`` over ``serving.knn``,
``model_version`` ``baseline-item-knn-v1``); ``model_version`` says which.

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
from functools import partial

import anyio

from api.metrics import ApiMetrics
from api.ports import EventSink, EventSinkError, FeatureReader, PortUnavailable, RecentItems
from api.serving.baseline import MODEL_VERSION, Scored, reason, recommend
from api.serving.champion import ChampionWatcher
from api.state import RecommenderState
from serving.cascade import LEARNED_SOURCES, CascadeAnswer, ServingSet, serve
from streams.events import RecommendationServed, RecommendedItem

logger = logging.getLogger(__name__)

VARIANT = "default"
# Cascade inferences at once. One: the cascade's many small kernels hold the GIL between
# them, so two callers in threads got less done than one (bench/cascade_request.py), and
# the other core stays free for the event loop and the feature reads.
INFERENCE_THREADS = 1


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
        champion: ChampionWatcher | None = None,
    ) -> None:
        self._reader = reader
        self._state = state
        self._served_log = served_log
        self._metrics = metrics
        self._champion = champion
        # Inference runs off the event loop; a burst queues here instead of thrashing.
        self._inference_limiter = anyio.CapacityLimiter(INFERENCE_THREADS)

    async def recommend(self, user_id: str, k: int, *, channel: str) -> RecommendationServed:
        started = time.perf_counter()
        recent = await self._user_recent(user_id)
        titles = self._state.catalogue.titles
        # Read once: a set swapped in during this request serves the next one.
        serving = self._champion.current if self._champion is not None else None
        answer = await self._cascade(serving, user_id, recent, k) if serving else None
        if answer is not None:
            model_version = answer.model_version
            items = [(p.item_id, p.score, p.reason) for p in answer.picks]
        else:
            model_version = MODEL_VERSION
            items = [(s.item_id, s.score, reason(s, titles)) for s in self._baseline(recent, k)]
        served = RecommendationServed(
            request_id=uuid.uuid4().hex,
            user_id=user_id,
            variant=VARIANT,
            model_version=model_version,
            items=tuple(
                RecommendedItem(item_id=item_id, rank=rank, score=round(score, 6), reason=why)
                for rank, (item_id, score, why) in enumerate(items, start=1)
            ),
        )
        kind = "personal" if recent is not None else "cold_start"
        self._metrics.recommendations.labels(kind, channel).inc()
        self._metrics.recommend_seconds.labels(VARIANT, channel).observe(
            time.perf_counter() - started
        )
        self._served_log.record(served)
        return served

    def _baseline(self, recent: RecentItems | None, k: int) -> list[Scored]:
        started = time.perf_counter()
        scored = recommend(recent, k, index=self._state.index, popularity=self._state.popularity)
        self._metrics.inference_seconds.labels("baseline").observe(time.perf_counter() - started)
        return scored

    async def _cascade(
        self, serving: ServingSet, user_id: str, recent: RecentItems | None, k: int
    ) -> CascadeAnswer | None:
        """The cascade's answer, or None (the baseline) if inference itself failed."""
        started = time.perf_counter()
        try:
            answer = await anyio.to_thread.run_sync(
                partial(serve, serving, user_id, recent, k, self._state.catalogue.titles),
                limiter=self._inference_limiter,
            )
        except (RuntimeError, IndexError, ValueError) as exc:
            # A set whose tensors disagree with its own config: serve, and say so loudly.
            self._metrics.stage_fallbacks.labels("cascade", "baseline").inc()
            logger.error(
                "model set %s failed for user %s, serving the baseline: %s",
                serving.cascade.label,
                user_id,
                exc,
            )
            return None
        self._metrics.inference_seconds.labels("cascade").observe(time.perf_counter() - started)
        for stage, source in answer.sources.items():
            if source not in (LEARNED_SOURCES[stage], "none"):
                self._metrics.stage_fallbacks.labels(stage, source).inc()
        return answer

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
        outcome = "miss" if recent is None else "hit"
        self._metrics.feature_reads.labels("user_recent", outcome).inc()
        return recent
