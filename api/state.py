"""In-process recommender state and the background tasks that keep it fresh.

* the log catalogue (known items, log counts, titles), then the co-occurrence index, read
  from the Parquet event log in a worker thread at startup and again whenever the files
  change;
* item features from the online store, refreshed every ``item_cache_seconds``: item
  popularity moves slowly, so no request reads item rows. The items read are the log's
  and the served model set's; each refresh also re-aligns the set's item features
  (:class:`api.serving.champion.ChampionWatcher`).

Requests read whatever is current; each refresh swaps in a whole new value, so a reader
never sees half an update. Until the log is read the API answers from what it has.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import anyio

from api.catalogue import LogCatalogue, log_signature, read_catalogue, read_cooccurrence
from api.metrics import ApiMetrics
from api.ports import FeatureReader, ItemStats, PortUnavailable
from api.serving.champion import ChampionWatcher
from api.serving.heuristic import CooccurrenceIndex, PopularityRanking, popularity_score

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StateSummary:
    catalogue_loaded: bool
    index_built: bool
    items_known: int
    items_with_neighbours: int
    items_with_online_stats: int
    last_log_error: str | None
    last_item_error: str | None


class RecommenderState:
    def __init__(
        self,
        log_dir: Path,
        reader: FeatureReader,
        metrics: ApiMetrics,
        champion: ChampionWatcher | None = None,
    ) -> None:
        self._log_dir = log_dir
        self._reader = reader
        self._metrics = metrics
        self._champion = champion
        self.catalogue = LogCatalogue()
        self.index = CooccurrenceIndex()
        self.popularity = PopularityRanking()
        self.online_stats: dict[str, ItemStats] = {}
        self.catalogue_loaded = asyncio.Event()
        self.index_built = asyncio.Event()
        self._last_log_error: str | None = None
        self._last_item_error: str | None = None

    # -- the event log -------------------------------------------------------------------

    async def refresh_log(self) -> bool:
        """Re-read the log if its files changed; True when something new was loaded."""
        try:
            signature = await anyio.to_thread.run_sync(log_signature, self._log_dir)
            if self.index_built.is_set() and signature == self.catalogue.signature:
                return False
            started = time.perf_counter()
            catalogue = await anyio.to_thread.run_sync(read_catalogue, self._log_dir)
            self.catalogue = catalogue
            self._rank_popularity()
            self.catalogue_loaded.set()
            index = await anyio.to_thread.run_sync(read_cooccurrence, self._log_dir)
        except (OSError, ValueError) as exc:
            # pyarrow raises ArrowInvalid (a ValueError) for an unreadable Parquet file.
            self._last_log_error = f"{type(exc).__name__}: {exc}"
            logger.warning("reading the event log under %s failed: %s", self._log_dir, exc)
            return False
        self.index = index
        self.index_built.set()
        self._last_log_error = None
        self._metrics.catalogue_items.set(len(catalogue.item_counts))
        self._metrics.cooccurrence_items.set(len(index))
        logger.info(
            "event log read: %d events, %d items, %d with neighbours, in %.1fs",
            catalogue.events,
            len(catalogue.item_counts),
            len(index),
            time.perf_counter() - started,
        )
        return True

    async def run_log_refresh(self, period_seconds: float) -> None:
        while True:
            await self.refresh_log()
            await asyncio.sleep(period_seconds)

    # -- item features ---------------------------------------------------------------------

    async def refresh_items(self) -> None:
        model_items = self._champion.item_ids() if self._champion is not None else ()
        item_ids = list(dict.fromkeys([*self.catalogue.item_counts, *model_items]))
        if not item_ids:
            return
        started = time.perf_counter()
        try:
            stats = await self._reader.item_stats(item_ids)
        except PortUnavailable as exc:
            # Keep serving the last good values; readiness reports the store itself.
            self._last_item_error = str(exc)
            self._metrics.feature_read_failures.labels("item_stats").inc()
            logger.warning("item features refresh failed, keeping the previous ones: %s", exc)
            return
        self._metrics.feature_read_seconds.labels("item_stats").observe(
            time.perf_counter() - started
        )
        self._last_item_error = None
        self.online_stats = stats
        self._rank_popularity()
        if self._champion is not None:
            await self._champion.refresh_items(stats)

    async def run_item_refresh(self, period_seconds: float) -> None:
        await self.catalogue_loaded.wait()
        while True:
            await self.refresh_items()
            await asyncio.sleep(period_seconds)

    def _rank_popularity(self) -> None:
        """Online counts where the store has them, the log's counts otherwise."""
        scores = {
            item_id: (
                popularity_score(self.online_stats[item_id])
                if item_id in self.online_stats
                else float(count)
            )
            for item_id, count in self.catalogue.item_counts.items()
        }
        self.popularity = PopularityRanking.from_scores(scores)

    def summary(self) -> StateSummary:
        return StateSummary(
            catalogue_loaded=self.catalogue_loaded.is_set(),
            index_built=self.index_built.is_set(),
            items_known=len(self.catalogue.item_counts),
            items_with_neighbours=len(self.index),
            items_with_online_stats=len(self.online_stats),
            last_log_error=self._last_log_error,
            last_item_error=self._last_item_error,
        )
