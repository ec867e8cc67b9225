"""In-process recommender state and the background tasks that keep it fresh.

* the log catalogue (known items, log counts, titles) and the datasets' events, read from
  the Parquet files in a worker thread at startup and again whenever the files change;
* the baseline's index (``api.serving.baseline``): co-occurrence and 14-day popularity of
  the dataset events the stream has reached (event time up to the stream's clock over the
  online item rows; all of them while the store knows no item) plus the archive of the
  interactions topic, which holds the live events; rebuilt when the clock moves or the
  archive grows, at most every ``baseline_rebuild_seconds``. The clock matters: a stack
  that replayed a log up to T must not count pairs from after T (``evaluate-api`` would
  score a baseline that knows the future);
* item features from the online store, refreshed every ``item_cache_seconds``: item
  popularity moves slowly, so no request reads item rows. The items read are the log's
  and the served model set's: those the worker's ledger names as written since the last
  refresh, and a sixtieth of all in turn (``ITEM_SWEEP_REFRESHES``); each refresh also
  re-aligns the set's item features (:class:`api.serving.champion.ChampionWatcher`).

Requests read whatever is current; each refresh swaps in a whole new value, so a reader
never sees half an update. Until the log is read the API answers from what it has.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import anyio
import pandas as pd

from api.catalogue import (
    LogCatalogue,
    LogSignature,
    archive_signature,
    log_signature,
    read_archived_events,
    read_catalogue,
    read_events,
)
from api.metrics import ApiMetrics
from api.ports import FeatureReader, ItemStats, PortUnavailable
from api.serving.baseline import BaselineIndex, PopularityRanking, build_index, popularity_score
from api.serving.champion import ChampionWatcher
from serving.cascade import CLOCK_GAP_MS, stream_clock

logger = logging.getLogger(__name__)

# An item refresh reads the rows the ledger of changed items names (written by the worker
# and `streamrec backfill` after each row, ``streamrec.infra.notify.item_changes_key``) and
# this share of every row in turn (a sweep), so each row is read at least once every this
# many refreshes (5 minutes at the default 5 s period): a row written without its ledger
# entry is read within that. At 47k items reading every row took half a second of the
# event loop's CPU every refresh, and requests' inference waited for the GIL meanwhile
# (p99 at 50 requests/s 658 ms, 18 ms without the refresh); a sweep of a twelfth was still
# ~90 CPU-ms a refresh (redis-py packing 4k commands). The first refresh reads every row,
# and so does one whose items changed (a new model set, a longer log).
ITEM_SWEEP_REFRESHES = 60
# Ledger entries read again from before the latest one read: workers writing in parallel
# score with their own clocks, and a write lands after its score was taken.
LEDGER_SLACK_MS = 2_000.0


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
        *,
        archive_dir: Path | None = None,
        baseline_rebuild_seconds: float = 5.0,
    ) -> None:
        self._log_dir = log_dir
        self._archive_dir = archive_dir
        self._rebuild_seconds = baseline_rebuild_seconds
        self._dataset_events = read_archived_events(None)
        self._archive_events = self._dataset_events
        self._archive_signature: LogSignature = ()
        self._index_key: tuple[int, LogSignature, LogSignature] | None = None
        self._index_built_at = 0.0
        self._reader = reader
        self._metrics = metrics
        self._champion = champion
        self.catalogue = LogCatalogue()
        self.index = BaselineIndex()
        self.popularity = PopularityRanking()
        self._ranked_catalogue: LogSignature | None = None  # catalogue of the last ranking
        self.online_stats: dict[str, ItemStats] = {}
        self.catalogue_loaded = asyncio.Event()
        self.index_built = asyncio.Event()
        self._last_log_error: str | None = None
        self._last_item_error: str | None = None
        # The item refresh: the items of its last full read, where its sweep is, and the
        # latest write time of the store's ledger of changed items it has read up to (None:
        # the store keeps no ledger, every refresh reads every row).
        self._items_fully_read: list[str] | None = None
        self._sweep_at = 0
        self._ledger_mark: float | None = None
        # The items to read, kept while the catalogue and the served set's items are the
        # same objects (at 47k items building the list was milliseconds of each refresh),
        # and the served set whose item features the last refresh re-aligned.
        self._item_ids: tuple[object, object, list[str], frozenset[str]] | None = None
        self._aligned: object = None

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
            self._dataset_events = await anyio.to_thread.run_sync(read_events, self._log_dir)
        except (OSError, ValueError) as exc:
            # pyarrow raises ArrowInvalid (a ValueError) for an unreadable Parquet file.
            self._last_log_error = f"{type(exc).__name__}: {exc}"
            logger.warning("reading the event log under %s failed: %s", self._log_dir, exc)
            return False
        self._last_log_error = None
        self._metrics.catalogue_items.set(len(catalogue.item_counts))
        if not self.online_stats:
            # The first build: read the online item rows first, so the index is built at
            # the stream's clock, not over every dataset event (the future of a stack
            # replayed up to T) until the next rebuild.
            await self.refresh_items()
        await self.rebuild_baseline(force=True)
        logger.info(
            "event log read: %d events, %d items, %d with neighbours, in %.1fs",
            catalogue.events,
            len(catalogue.item_counts),
            len(self.index),
            time.perf_counter() - started,
        )
        return True

    # -- the baseline's index ----------------------------------------------------------------

    def clock(self) -> int:
        """How far the stream has replayed the datasets: the stream's clock over the online
        item rows, leaving out times past the datasets' last event by more than a day (live
        events on a stack that replayed an old log: enough of them, 50 distinct items,
        would otherwise move the clock to today, and every dataset event would count as
        reached). 0 while the store knows no item."""
        times = [s.last_event_time or 0 for s in self.online_stats.values()]
        if len(self._dataset_events):
            end = int(self._dataset_events["event_time"].max()) + CLOCK_GAP_MS
            times = [t for t in times if t <= end]
        return stream_clock(times)

    async def rebuild_baseline(self, *, force: bool = False) -> bool:
        """Rebuild the index when the clock moved or the archive grew; True when rebuilt."""
        if not force and time.monotonic() - self._index_built_at < self._rebuild_seconds:
            return False
        try:
            signature = await anyio.to_thread.run_sync(archive_signature, self._archive_dir)
            if signature != self._archive_signature:
                self._archive_events = await anyio.to_thread.run_sync(
                    read_archived_events, self._archive_dir
                )
                self._archive_signature = signature
        except (OSError, ValueError) as exc:
            # An archive part being written, or unreadable: keep what was read before.
            logger.warning("reading the archive under %s failed: %s", self._archive_dir, exc)
        clock = self.clock()
        key = (clock, self.catalogue.signature, self._archive_signature)
        if key == self._index_key and self.index_built.is_set():
            return False
        self.index = await anyio.to_thread.run_sync(
            _index_as_of,
            self._dataset_events,
            self._archive_events,
            tuple(self.catalogue.item_counts),
            clock,
            self.catalogue.categories,
        )
        self._index_key = key
        self._index_built_at = time.monotonic()
        self.index_built.set()
        self._metrics.cooccurrence_items.set(len(self.index))
        return True

    async def first_index(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the first index (the log read at start-up); True when
        it is built. A request arriving in the API's first seconds then gets the kNN's
        list, not the popularity fallback, unless the log takes longer than that."""
        if self.index_built.is_set():
            return True
        try:
            await asyncio.wait_for(self.index_built.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def run_log_refresh(self, period_seconds: float) -> None:
        while True:
            await self.refresh_log()
            await asyncio.sleep(period_seconds)

    # -- item features ---------------------------------------------------------------------

    def _items_to_read(self) -> tuple[list[str], frozenset[str]]:
        """The log's items and the served set's, in that order, and as a set."""
        catalogue = self.catalogue
        model_items = self._champion.item_ids() if self._champion is not None else ()
        held = self._item_ids
        if held is None or held[0] is not catalogue or held[1] is not model_items:
            item_ids = list(dict.fromkeys([*catalogue.item_counts, *model_items]))
            held = (catalogue, model_items, item_ids, frozenset(item_ids))
            self._item_ids = held
        return held[2], held[3]

    async def refresh_items(self) -> None:
        item_ids, wanted = self._items_to_read()
        if not item_ids:
            return
        started = time.perf_counter()
        try:
            stats, unchanged = await self._read_item_rows(item_ids, wanted)
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
        if not unchanged or self._ranked_catalogue != self.catalogue.signature:
            self._rank_popularity()
        if self.index_built.is_set():
            await self.rebuild_baseline()
        champion = self._champion
        # No row changed: the served set's features stand (at 47k items re-aligning them
        # only to find nothing changed was a pass over every item, holding the GIL).
        if champion is not None and (not unchanged or champion.current is not self._aligned):
            await champion.refresh_items(stats)
            self._aligned = champion.current

    async def _read_item_rows(
        self, item_ids: list[str], wanted: frozenset[str]
    ) -> tuple[dict[str, ItemStats], bool]:
        """The rows of ``item_ids`` and whether none changed since the last refresh.

        When the store keeps a ledger of changed items, the rows it names as written since
        the last read (``LEDGER_SLACK_MS`` before it) and the sweep's next
        ``1 / ITEM_SWEEP_REFRESHES`` of the items; every row on the first refresh, one whose
        items differ from the last full read's, and without a ledger. The reader hands back
        an unchanged row as the same object: an idle stream ranks nothing again.
        """
        reader = self._reader
        mark = self._ledger_mark
        if mark is not None and item_ids is self._items_fully_read:
            changes = await reader.item_changes(mark - LEDGER_SLACK_MS)
            if changes is not None:
                width = -(-len(item_ids) // ITEM_SWEEP_REFRESHES)
                swept = item_ids[self._sweep_at : self._sweep_at + width]
                self._sweep_at = (self._sweep_at + width) % len(item_ids)
                changed = [item_id for item_id in changes.item_ids if item_id in wanted]
                ids = list(dict.fromkeys([*changed, *swept]))
                fresh = await reader.item_stats(ids)
                before = self.online_stats
                unchanged = all(fresh.get(item_id) is before.get(item_id) for item_id in ids)
                self._ledger_mark = max(mark, changes.latest_ms)
                if unchanged:  # the rows as they are: no copy of every row
                    return before, True
                stats = dict(before)
                for item_id in ids:
                    row = fresh.get(item_id)
                    if row is None:
                        stats.pop(item_id, None)
                    else:
                        stats[item_id] = row
                return stats, False
        # The ledger's latest write before the rows are read: a row written meanwhile is
        # read again by the next refresh.
        changes = await reader.item_changes(None)
        stats = await reader.item_stats(item_ids)
        self._ledger_mark = changes.latest_ms if changes is not None else None
        self._items_fully_read = item_ids
        self._sweep_at = 0
        before = self.online_stats
        unchanged = stats.keys() == before.keys() and all(
            row is before[item_id] for item_id, row in stats.items()
        )
        return stats, unchanged

    async def run_item_refresh(self, period_seconds: float) -> None:
        await self.catalogue_loaded.wait()
        while True:
            await self.refresh_items()
            await asyncio.sleep(period_seconds)

    def _rank_popularity(self) -> None:
        """Online counts where the store has them, the log's counts otherwise."""
        self._ranked_catalogue = self.catalogue.signature
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


def _index_as_of(
    dataset: pd.DataFrame,
    archive: pd.DataFrame,
    item_ids: tuple[str, ...],
    clock: int,
    categories: Mapping[str, tuple[str, ...]],
) -> BaselineIndex:
    """Blocking: the dataset events up to ``clock`` (all of them at 0) and the archive's."""
    reached = dataset if clock == 0 else dataset[dataset["event_time"] <= clock]
    events = pd.concat([reached, archive], ignore_index=True).drop_duplicates(
        ["user_id", "item_id", "event_time"]
    )
    now = clock or (int(events["event_time"].max()) if len(events) else 0)
    return build_index(events, item_ids, now, categories=categories)
