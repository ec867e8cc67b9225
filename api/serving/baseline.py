"""The baseline strategy the API serves while no model set passed the gate: the live item-kNN.

The scorer is ``serving.knn``, the one the prequential harness scores as its item-kNN arm,
so what the API serves without a champion is the baseline every set was measured against.
Its inputs here:

* the user's recent items and every item they touched: the online store's row, so a
  click moves the list as soon as the worker folded it;
* co-occurrence: distinct (user, item) pairs of the log so far (:class:`BaselineIndex`,
  rebuilt by ``api.state`` as the stream moves and as the archive grows with live events);
* 14-day popularity (interactions in the 14 days up to the stream's clock), for a user
  with no history and for ties;
* the catalogue's categories: a recent item's vote for an item of a category it shares
  counts double (``serving.knn.SERVED_PARAMS``), so the list follows what the user is
  watching now rather than the blockbusters everyone watched.

Until the log is read, items fall back to :class:`PopularityRanking` (the online counts).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from api.ports import ItemStats, RecentItems
from serving.cascade import POPULAR_REASON
from serving.knn import (
    KNN_VERSION,
    SERVED_PARAMS,
    KnnParams,
    SparseCooccurrence,
    category_incidence,
)
from serving.knn import recommend as knn_recommend

MODEL_VERSION = KNN_VERSION
RECENT_DAYS = 14.0
DAY_MS = 86_400_000


@dataclass(frozen=True)
class BaselineIndex:
    """Co-occurrence and recent popularity over a vocabulary, as of ``clock_ms``."""

    item_ids: tuple[str, ...] = ()
    item_index: Mapping[str, int] = field(default_factory=dict)
    cooccurrence: SparseCooccurrence | None = None
    recent_popularity: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (I,)
    categories: sp.csr_matrix | None = None  # (I, C) item-category incidence
    clock_ms: int = 0
    events: int = 0

    def __len__(self) -> int:
        """Items with at least one co-occurring item."""
        if self.cooccurrence is None:
            return 0
        return int((np.diff(self.cooccurrence.counts.indptr) > 0).sum())


def build_index(
    events: pd.DataFrame,
    item_ids: Sequence[str],
    clock_ms: int,
    recent_days: float = RECENT_DAYS,
    categories: Mapping[str, Sequence[str]] | None = None,
) -> BaselineIndex:
    """The index of ``events`` (user_id, item_id, event_time): items of ``item_ids`` first,
    then any other item the events name; recent popularity over
    ``[clock_ms - recent_days, ∞)`` (live events ahead of the clock count as recent)."""
    names = list(dict.fromkeys([*map(str, item_ids), *events["item_id"].astype(str).unique()]))
    index = {item: n for n, item in enumerate(names)}
    items = events["item_id"].astype(str).map(index).to_numpy(np.int64)
    users = pd.factorize(events["user_id"].astype(str))[0]
    times = events["event_time"].to_numpy(np.int64)
    recent = times >= clock_ms - int(recent_days * DAY_MS)
    return BaselineIndex(
        item_ids=tuple(names),
        item_index=index,
        cooccurrence=SparseCooccurrence(users, items, len(names)),
        recent_popularity=np.bincount(items[recent], minlength=len(names)).astype(np.float64),
        categories=category_incidence([categories.get(i, ()) for i in names])
        if categories
        else None,
        clock_ms=clock_ms,
        events=len(events),
    )


def popularity_score(stats: ItemStats) -> float:
    """Engagement of one item: purchases and clicks say more than views."""
    return float(stats.interaction_count + stats.click_count + 2 * stats.purchase_count)


@dataclass(frozen=True)
class PopularityRanking:
    """Items by popularity, best first, with scores normalised to (0, 1]."""

    items: tuple[str, ...] = ()
    scores: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_scores(cls, raw: Mapping[str, float]) -> PopularityRanking:
        ranked = sorted(((s, i) for i, s in raw.items() if s > 0), key=lambda p: (-p[0], p[1]))
        if not ranked:
            return cls()
        top = ranked[0][0]
        return cls(items=tuple(i for _, i in ranked), scores={i: s / top for s, i in ranked})


@dataclass(frozen=True)
class Scored:
    item_id: str
    score: float
    # The recent item that contributed most to the score; None for a popularity pick.
    because_of: str | None


def recommend(
    recent: RecentItems | None,
    k: int,
    *,
    index: BaselineIndex,
    popularity: PopularityRanking,
    params: KnnParams = SERVED_PARAMS,
) -> list[Scored]:
    """Up to ``k`` items for a user (None: never seen); never an item the user touched."""
    touched = set(recent.items).union(recent.seen) if recent is not None else set()
    if index.cooccurrence is None:  # the log is not read yet: the online counts
        popular = [item for item in popularity.items if item not in touched][:k]
        return [Scored(item, popularity.scores[item], None) for item in popular]
    known = index.item_index
    history = [known[i] for i in (recent.items if recent is not None else ()) if i in known]
    exclude = [known[i] for i in touched if i in known]
    picks = knn_recommend(
        index.cooccurrence, history, index.recent_popularity, exclude, k, params, index.categories
    )
    return [
        Scored(
            index.item_ids[p.index],
            p.score,
            None if p.because is None else index.item_ids[p.because],
        )
        for p in picks
    ]


def reason(scored: Scored, titles: Mapping[str, str]) -> str:
    if scored.because_of is None:
        return POPULAR_REASON
    return f"because you interacted with {titles.get(scored.because_of, scored.because_of)}"
