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
import random
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from functools import partial

import anyio

from api.experiments.book import ExperimentBook
from api.experiments.plan import Pick, plan_list
from api.metrics import ApiMetrics
from api.ports import EventSink, EventSinkError, FeatureReader, PortUnavailable, RecentItems
from api.serving.baseline import MODEL_VERSION, Scored, reason, recommend
from api.serving.champion import ChampionWatcher
from api.serving.memo import AnswerMemo
from api.state import RecommenderState
from serving.cascade import LEARNED_SOURCES, POPULAR_REASON, CascadeAnswer, ServingSet, serve
from streams.events import RecommendationServed, RecommendedItem

logger = logging.getLogger(__name__)

# Cascade inferences at once. One: the cascade's many small kernels hold the GIL between
# them, so two callers in threads got less done than one (bench/cascade_request.py), and
# the other core stays free for the event loop and the feature reads.
INFERENCE_THREADS = 1
# How long a request in the API's first seconds waits for the baseline's first index (the
# event log read at start-up, about a second for MovieLens-100K) before it gets the
# popularity fallback.
FIRST_INDEX_WAIT_SECONDS = 3.0
# The baseline's answers are one lane of their memo (its inputs: the index, the ranking).
BASELINE_LANE = "baseline"


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


class Overloaded(RuntimeError):
    """More ``GET /recommend`` lists wait for inference than the process takes at once."""

    def __init__(self, waiting: int) -> None:
        super().__init__(
            f"the API is overloaded: {waiting} recommendation requests are waiting for "
            "inference in this process; retry shortly"
        )


class RecommendationService:
    def __init__(
        self,
        reader: FeatureReader,
        state: RecommenderState,
        served_log: ServedLog,
        metrics: ApiMetrics,
        champion: ChampionWatcher | None = None,
        experiments: ExperimentBook | None = None,
        challenger: ChampionWatcher | None = None,
        *,
        max_in_progress: int = 64,
        answer_memo_size: int = 4096,
        answer_max_item_age: float = 0.0,
    ) -> None:
        # HTTP requests beyond this many waiting for (or in) inference are refused at once
        # (``Overloaded``): under an overload, the inference queue (one thread) would
        # otherwise grow without bound and every request wait behind it (a 400/s burst on
        # a 150/s process queued requests for minutes). A kept list (the memo) or the
        # baseline's needs no inference and is never refused, nor is a stream's update
        # (it follows an event).
        self._max_in_progress = max_in_progress
        self._inferring = 0
        self._reader = reader
        self._experiments = experiments
        self._challenger = challenger
        self._state = state
        self._served_log = served_log
        self._metrics = metrics
        self._champion = champion
        # Inference runs off the event loop; a burst queues here instead of thrashing.
        self._inference_limiter = anyio.CapacityLimiter(INFERENCE_THREADS)
        # Lists kept while their inputs are the same objects (``api.serving.memo``): a
        # request whose user row, served set and titles are unchanged gets the answer
        # computing it again would give, without the inference.
        # A served set's lists also across an item refresh, for ``answer_max_item_age``
        # seconds, while the user's row is the same: on a busy stream every refresh changes
        # some item's row. Not the baseline's: its inputs also change from "no index yet"
        # (popularity only) to the kNN's index, a different kind of list.
        self._cascade_answers: AnswerMemo[CascadeAnswer] = AnswerMemo(
            answer_memo_size, max_age=answer_max_item_age
        )
        self._baseline_answers: AnswerMemo[list[Scored]] = AnswerMemo(answer_memo_size)

    async def recommend(self, user_id: str, k: int, *, channel: str) -> RecommendationServed:
        """One list, served and recorded; raises ``Overloaded`` for an HTTP request whose
        list must be computed while ``max_in_progress`` others wait for inference."""
        started = time.perf_counter()
        recent = await self._user_recent(user_id)
        request_id = uuid.uuid4().hex
        # The experiments pick the strategy (``api.experiments.plan``); outside them, the
        # champion as before.
        planned = await plan_list(
            self._experiments.current if self._experiments is not None else (),
            user_id,
            request_id,
            k,
            partial(self._strategy_list, user_id, recent, channel),
            partial(self._pool, recent),
        )
        served = RecommendationServed(
            request_id=request_id,
            user_id=user_id,
            variant=planned.variant,
            experiment=planned.experiment,
            model_version=planned.model_version,
            items=tuple(
                RecommendedItem(
                    item_id=pick.item_id,
                    rank=rank,
                    score=round(pick.score, 6),
                    reason=pick.reason,
                    variant=pick.variant,
                    propensity=pick.propensity,
                    din_score=None if pick.din_score is None else round(pick.din_score, 6),
                )
                for rank, pick in enumerate(planned.picks, start=1)
            ),
        )
        kind = "personal" if recent is not None else "cold_start"
        self._metrics.recommendations.labels(kind, channel).inc()
        self._metrics.recommend_seconds.labels(planned.variant, channel).observe(
            time.perf_counter() - started
        )
        self._served_log.record(served)
        return served

    async def _strategy_list(
        self,
        user_id: str,
        recent: RecentItems | None,
        channel: str,
        strategy: str,
        k: int,
        rng: random.Random,
    ) -> tuple[str, list[Pick]]:
        """One strategy's list (``api.experiments.definitions.STRATEGIES``), best first."""
        if strategy in ("champion", "challenger"):
            watcher = self._champion if strategy == "champion" else self._challenger
            serving = watcher.current if watcher is not None else None
            answer = await self._cascade(serving, user_id, recent, k, channel) if serving else None
            if answer is not None:
                return answer.model_version, [
                    Pick(p.item_id, p.score, p.reason, din_score=p.din_score) for p in answer.picks
                ]
            strategy = "baseline"  # no set holds the alias yet (or it failed): as before
        titles = self._state.catalogue.titles
        if strategy == "random":
            pool = self._pool(recent)
            chosen = rng.sample(list(pool), min(k, len(pool)))
            return "random", [Pick(item, 0.0, "exploring") for item in chosen]
        if strategy == "popularity":  # the online counts' ranking, less the user's items
            seen = self._pool_excludes(recent)
            ranking = self._state.popularity
            popular = [item for item in ranking.items if item not in seen][:k]
            return "popularity", [
                Pick(item, ranking.scores[item], POPULAR_REASON) for item in popular
            ]
        await self._state.first_index(FIRST_INDEX_WAIT_SECONDS)
        scored = self._baseline(recent, k)
        return MODEL_VERSION, [Pick(s.item_id, s.score, reason(s, titles)) for s in scored]

    def _pool(self, recent: RecentItems | None) -> list[str]:
        """Every item the API knows, less what the user has: what exploration draws from."""
        seen = self._pool_excludes(recent)
        return [item for item in self._state.popularity.items if item not in seen]

    @staticmethod
    def _pool_excludes(recent: RecentItems | None) -> set[str]:
        return set(recent.seen) | set(recent.items) if recent is not None else set()

    def _baseline(self, recent: RecentItems | None, k: int) -> list[Scored]:
        index, popularity = self._state.index, self._state.popularity
        inputs, key = (index, popularity), (recent, k)
        kept = self._baseline_answers.get(BASELINE_LANE, inputs, key)
        self._metrics.answer_memo.labels("baseline", "miss" if kept is None else "hit").inc()
        if kept is not None:
            return kept
        started = time.perf_counter()
        scored = recommend(recent, k, index=index, popularity=popularity)
        self._metrics.inference_seconds.labels("baseline").observe(time.perf_counter() - started)
        self._baseline_answers.put(BASELINE_LANE, inputs, key, scored)
        return scored

    async def _cascade(
        self, serving: ServingSet, user_id: str, recent: RecentItems | None, k: int, channel: str
    ) -> CascadeAnswer | None:
        """The cascade's answer, or None (the baseline) if inference itself failed."""
        titles = self._state.catalogue.titles
        inputs, key = (serving, titles), (user_id, recent, k)
        answer = self._cascade_answers.get(serving.cascade, inputs, key)
        self._metrics.answer_memo.labels("cascade", "miss" if answer is None else "hit").inc()
        if answer is None:
            if channel == "http" and self._inferring >= self._max_in_progress:
                self._metrics.recommend_refused.inc()
                raise Overloaded(self._inferring)
            self._inferring += 1
            try:
                answer = await self._infer(serving, user_id, recent, k, titles)
            finally:
                self._inferring -= 1
            if answer is None:
                return None
            self._cascade_answers.put(serving.cascade, inputs, key, answer)
        for stage, source in answer.sources.items():  # a kept answer fell back just the same
            if source not in (LEARNED_SOURCES[stage], "none"):
                self._metrics.stage_fallbacks.labels(stage, source).inc()
        return answer

    async def _infer(
        self,
        serving: ServingSet,
        user_id: str,
        recent: RecentItems | None,
        k: int,
        titles: Mapping[str, str],
    ) -> CascadeAnswer | None:
        started = time.perf_counter()
        try:
            answer = await anyio.to_thread.run_sync(
                partial(serve, serving, user_id, recent, k, titles),
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
