"""What the prequential replay folds, and the arms that answer from it.

:class:`OnlineState` is the fold of a log prefix with the stream worker's own functions
(``streams.folding``), plus the counts the baselines need. An arm answers (user, state)
with its top-k item indices: the baselines from the counts, the cascade through
``serving.cascade.serve``, the function the API calls for one request.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch

from models.cascade import Covisits
from serving.cascade import ItemFeatures, ServingSet, covisit_row, serve, stream_clock
from serving.features import RecentItems
from serving.knn import (
    SERVED_PARAMS,
    FoldedCooccurrence,
    KnnParams,
    cosine_rows,
    knn_scores,
    top_k,
)
from serving.knn import recommend as knn_recommend
from serving.knn import recommend_grid as knn_recommend_grid
from serving.loading import LoadedCascade
from streams.events import Click, Interaction
from streams.folding import (
    COVISIT_KEEP,
    ItemDelta,
    ItemState,
    UserState,
    covisit_pairs,
    fold_interaction,
    fold_item,
    heaviest_covisits,
)

DAY_MS = 86_400_000
CASCADE = "cascade"
KNN = "item-kNN"
KNN_TUNED = "item-kNN (tuned)"
POPULARITY = "popularity"
RECENT_POPULARITY = "popularity 14d"
KNN_CATEGORIES = "item-kNN + categories"  # what the API serves without a champion
# Changed neighbours merged into a row as last chosen; more, and it is chosen from all counts.
MERGE_MAX = 2 * COVISIT_KEEP


class OnlineState:
    """The fold of a log prefix: what the online store holds, plus the baselines' counts.

    Users: the worker's ``UserState`` and every item they touched. Vocabulary items: the
    raw values the item view holds (trend score, last event time, clicks, co-visited
    neighbours, kept as the arrays serving reads and updated per changed item), distinct
    users (all-time popularity), interactions in the recent window, and item-item
    co-occurrence counts (``serving.knn.FoldedCooccurrence``, sparse).
    """

    def __init__(
        self,
        item_ids: Sequence[str],
        keep: int,
        recent_days: float,
        categories: sp.csr_matrix | None = None,
    ) -> None:
        self.item_ids = tuple(item_ids)
        self.categories = categories  # (I, C) item-category incidence, when known
        self.item_index = {item: n for n, item in enumerate(self.item_ids)}
        self.keep = keep
        self.window_ms = int(recent_days * DAY_MS)
        self.users: dict[str, UserState] = {}
        self.seen: dict[str, set[str]] = {}
        self.seen_index: dict[str, list[int]] = {}  # vocabulary items, first-touch order
        self.items: dict[str, ItemState] = {}
        n = len(self.item_ids)
        self.trend = np.zeros(n, np.float64)
        self.last = np.zeros(n, np.int64)
        self.clicks = np.zeros(n, np.int64)
        self.cooccurrence = FoldedCooccurrence(n)
        self.recent_counts = np.zeros(n, np.float64)
        self.neighbours = np.full((n, COVISIT_KEEP), -1, np.int64)
        self.neighbour_weights = np.zeros((n, COVISIT_KEEP), np.float32)
        self.covisit_totals = np.zeros(n, np.float32)
        # rows to choose again (item_features): per item, the neighbours whose counts grew
        # since its row was last chosen (None: too many to merge, chosen from all counts)
        self._covisits_changed: dict[str, set[str] | None] = {}
        self._heaviest: dict[str, list[str]] = {}  # each row's neighbours as last chosen
        # every item's last event time, in the vocabulary or not: the stream clock's input
        self._slots: dict[str, int] = {}
        self._last_all = np.zeros(max(n, 1), np.int64)
        self._window: deque[tuple[int, int]] = deque()
        self.version = 0  # folds so far: item rows are rebuilt only when it moves
        # The cosine rows of one user's recent items at one version, for the kNN arms
        self._cosine: tuple[tuple[str, int], sp.csr_matrix] | None = None

    def fold(self, event: Interaction | Click) -> None:
        self.version += 1
        delta = ItemDelta(event.item_id)
        delta.add(event)
        if isinstance(event, Interaction):
            user = self.users.setdefault(event.user_id, UserState())
            if not fold_interaction(user, event, self.keep):
                return  # a repeated event id: the worker does not count it twice
            seen = self.seen.setdefault(event.user_id, set())
            index = self.item_index.get(event.item_id)
            if index is not None:
                if event.item_id not in seen:
                    self._covisit(event.user_id, index)
                self._window.append((event.event_time, index))
                self.recent_counts[index] += 1
            seen.add(event.item_id)
            # The worker's co-visitation: both items of every pair get it (streams.batches).
            for other, count in covisit_pairs(user, event):
                delta.add_covisit(other, count, event.event_time)
                partner = ItemDelta(other)
                partner.add_covisit(event.item_id, count, event.event_time)
                self._fold_item(partner)
        self._fold_item(delta)

    def _fold_item(self, delta: ItemDelta) -> None:
        item = self.items.setdefault(delta.item_id, ItemState())
        fold_item(item, delta)
        slot = self._slots.setdefault(delta.item_id, len(self._slots))
        if slot == len(self._last_all):
            self._last_all = np.concatenate([self._last_all, np.zeros_like(self._last_all)])
        self._last_all[slot] = item.last_event_time
        index = self.item_index.get(delta.item_id)
        if index is not None:
            self.trend[index] = item.trend_score
            self.last[index] = item.last_event_time
            self.clicks[index] = item.click_count
            if delta.covisits:
                # the total now (every item's norm is read); the row when it is read
                self.covisit_totals[index] = item.covisit_total
                changed = self._covisits_changed.get(delta.item_id, set())
                if changed is not None:
                    changed.update(delta.covisits)
                    if len(changed) > MERGE_MAX:
                        changed = None
                self._covisits_changed[delta.item_id] = changed

    def _choose_covisits(self, rows: Sequence[int] | None = None) -> None:
        """The changed items' rows as the worker pushes them: the heaviest neighbours
        (``streams.folding.heaviest_covisits``), chosen only when read. Counts only grow, so
        a neighbour outside a row as last chosen whose count did not change stays outside:
        the row is chosen again from its last neighbours and the changed ones alone.
        ``rows``: only these items' rows (item indices), the others wait for their read."""
        if rows is None:
            changes = list(self._covisits_changed.items())
            self._covisits_changed.clear()
        else:
            wanted = (self.item_ids[index] for index in rows)
            changes = [
                (item_id, self._covisits_changed.pop(item_id))
                for item_id in wanted
                if item_id in self._covisits_changed
            ]
        for item_id, changed in changes:
            item = self.items[item_id]
            counts = item.covisits
            if changed is None:
                heaviest = heaviest_covisits(counts)
            else:
                pool = changed.union(self._heaviest.get(item_id, ()))
                chosen = heapq.nsmallest(COVISIT_KEEP, pool, key=lambda n: (-counts[n], n))
                heaviest = [(n, counts[n]) for n in chosen]
            self._heaviest[item_id] = [n for n, _ in heaviest]
            row = ([n for n, _ in heaviest], [c for _, c in heaviest], item.covisit_total)
            neighbours, weights = covisit_row(row, self.item_index)
            index = self.item_index[item_id]
            self.neighbours[index] = neighbours
            self.neighbour_weights[index] = weights

    def choose_rows(self) -> None:
        """Choose every changed co-visitation row now (a state about to be copied: the
        copies need not choose them each, nor carry the changed neighbours)."""
        self._choose_covisits()

    def choose_rows_of(self, user_id: str) -> None:
        """Choose the changed co-visitation rows of the user's recent items: the only rows
        the cascade reads for the user (``models.cascade.covisit_contributions``; every
        item's total is kept current by the fold). At 47k items the folds between two
        scored events change some 30 rows and a user's recent items are few of them:
        choosing every changed row was a tenth of the prequential replay."""
        self._choose_covisits(self.recent_indices(user_id, self.keep))

    def _covisit(self, user_id: str, index: int) -> None:
        before = self.seen_index.setdefault(user_id, [])
        self.cooccurrence.add(before, index)
        before.append(index)

    @property
    def users_per_item(self) -> np.ndarray:
        """(I,) distinct users per item: all-time popularity."""
        return self.cooccurrence.users_per_item

    def advance(self, now_ms: int) -> None:
        """Drop interactions older than the recent window ending at ``now_ms``."""
        while self._window and self._window[0][0] < now_ms - self.window_ms:
            _, index = self._window.popleft()
            self.recent_counts[index] -= 1

    def recent(self, user_id: str) -> RecentItems | None:
        """The user's row as the API's feature reader returns it (None: never seen)."""
        state = self.users.get(user_id)
        if state is None or not state.items:
            return None
        return RecentItems(
            items=tuple(state.items),
            times=tuple(state.times),
            interaction_count=state.interaction_count,
            last_event_time=state.last_event_time,
            seen=frozenset(self.seen.get(user_id, ())),
        )

    def item_features(self, every_row: bool = True) -> ItemFeatures:
        """The vocabulary's item rows as the API's item refresh builds them.

        Views of the state's own arrays, not copies (at 47k items the co-visitation rows
        alone are 57 MB, and the replay reads the rows once per event): valid until the
        next fold, and the arms rebuild them whenever the state's ``version`` moved.
        ``every_row=False``: the co-visitation rows are chosen only as far as they were
        already; a reader chooses the rows it reads with :meth:`choose_rows_of` first.
        """
        if every_row:
            self._choose_covisits()
        return ItemFeatures(
            trend_score=torch.from_numpy(self.trend),
            last_event_time=torch.from_numpy(self.last),
            clicks=torch.from_numpy(self.clicks),
            impressions=torch.zeros(len(self.item_ids), dtype=torch.long),
            latest_event_time=stream_clock(self._last_all[: len(self._slots)]),
            with_stats=int((self.last > 0).sum()),
            covisits=Covisits(
                neighbours=torch.from_numpy(self.neighbours),
                weights=torch.from_numpy(self.neighbour_weights),
                totals=torch.from_numpy(self.covisit_totals),
            )
            if self.covisit_totals.any()
            else None,
        )

    def seen_indices(self, user_id: str) -> list[int]:
        return self.seen_index.get(user_id, [])

    def recent_indices(self, user_id: str, n: int) -> list[int]:
        state = self.users.get(user_id)
        if state is None:
            return []
        out = [self.item_index[i] for i in state.items if i in self.item_index]
        return out[:n]

    def cosine(self, user_id: str) -> sp.csr_matrix:
        """``serving.knn.cosine_rows`` of the user's recent items (all that are kept), held
        until the next fold: every kNN arm of an event reads a beginning of it."""
        key = (user_id, self.version)
        if self._cosine is None or self._cosine[0] != key:
            rows = cosine_rows(self.cooccurrence, self.recent_indices(user_id, self.keep))
            self._cosine = (key, rows)
        return self._cosine[1]

    def knn_scores(self, user_id: str, params: KnnParams) -> np.ndarray | None:
        """(I,) item-kNN scores (``serving.knn``, what the API serves without a champion)
        of the user's recent items; None without history."""
        return knn_scores(self.cooccurrence, self.recent_indices(user_id, params.history), params)


# An arm answers (user, the state to read) with the top-k item indices.
Arm = Callable[[str, OnlineState], list[int]]


def popularity_arm(k: int) -> Arm:
    def arm(user_id: str, state: OnlineState) -> list[int]:
        return top_k(state.users_per_item, state.recent_counts, state.seen_indices(user_id), k)

    return arm


def recent_popularity_arm(k: int) -> Arm:
    def arm(user_id: str, state: OnlineState) -> list[int]:
        return top_k(state.recent_counts, state.users_per_item, state.seen_indices(user_id), k)

    return arm


def knn_arm(k: int, params: KnnParams) -> Arm:
    """The item-kNN through ``serving.knn.recommend``, the function the API serves it with."""

    def arm(user_id: str, state: OnlineState) -> list[int]:
        picks = knn_recommend(
            state.cooccurrence,
            state.recent_indices(user_id, params.history),
            state.recent_counts,
            state.seen_indices(user_id),
            k,
            params,
            state.categories,
            state.cosine(user_id),
        )
        return [pick.index for pick in picks]

    return arm


@dataclass
class KnnGrid:
    """Item-kNN arms of a grid of parameters, answered together per request
    (``serving.knn.recommend_grid``: one product for the grid), the same picks as one
    ``knn_arm`` per parameters. ``arms()`` gives one arm per parameters; the replay calls
    them one after the other for the same (user, state), so the first call answers all."""

    k: int
    grid: Sequence[KnnParams]
    _answers: tuple[tuple[str, int, int], list[list[int]]] | None = None

    def _all(self, user_id: str, state: OnlineState) -> list[list[int]]:
        key = (user_id, id(state), state.version)
        if self._answers is None or self._answers[0] != key:
            longest = max(params.history for params in self.grid)
            picks = knn_recommend_grid(
                state.cooccurrence,
                state.recent_indices(user_id, longest),
                state.recent_counts,
                state.seen_indices(user_id),
                self.k,
                self.grid,
                state.cosine(user_id),
            )
            self._answers = (key, picks)
        return self._answers[1]

    def arms(self) -> list[Arm]:
        def arm_at(position: int) -> Arm:
            return lambda user_id, state: self._all(user_id, state)[position]

        return [arm_at(position) for position in range(len(self.grid))]


@dataclass
class CascadeArm:
    """The served cascade through ``serving.cascade.serve``; times every call."""

    cascade: LoadedCascade
    k: int
    seconds: list[float] = field(default_factory=list)
    din_scores: list[float] = field(default_factory=list)  # DIN's logit of every pick
    _features: tuple[tuple[int, int], ItemFeatures] | None = None

    def __call__(self, user_id: str, state: OnlineState) -> list[int]:
        key = (id(state), state.version)  # item rows change only when the state folds
        if self._features is None or self._features[0] != key:
            self._features = (key, state.item_features(every_row=False))
        state.choose_rows_of(user_id)  # into the arrays the features are views of
        serving = ServingSet(self.cascade, self._features[1])
        started = time.perf_counter()
        answer = serve(serving, user_id, state.recent(user_id), self.k, {})
        self.seconds.append(time.perf_counter() - started)
        self.din_scores.extend(p.din_score for p in answer.picks if p.din_score is not None)
        return [self.cascade.item_index[pick.item_id] for pick in answer.picks]


def baseline_arms(
    k: int, knn: KnnParams, tuned: KnnParams | None, categories: bool = False
) -> dict[str, Arm]:
    arms = {
        POPULARITY: popularity_arm(k),
        RECENT_POPULARITY: recent_popularity_arm(k),
        KNN: knn_arm(k, knn),
    }
    if tuned is not None:
        arms[KNN_TUNED] = knn_arm(k, tuned)
    if categories:
        arms[KNN_CATEGORIES] = knn_arm(k, SERVED_PARAMS)
    return arms
