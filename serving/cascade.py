"""One request through the loaded cascade: online features in, a ranked list out.

* item features: the raw online values of every vocabulary item (trend score, last event
  time, clicks), aligned to the set's item index when items are refreshed; turned into the
  context features of :mod:`models.context` at the request's "now";
* "now" is event time, never the wall clock, so a replayed 1998 log is served as of 1998:
  the stream's clock (:func:`stream_clock`), read from the items' last event times so that
  no single user can move it (docs/design.md, "The clock");
* the user: recent items newest first (those outside the vocabulary are skipped, all of
  them are excluded), the trained row when the user is in the vocabulary, and
  ``[activity, user_recency]`` from the interaction count and last event time.

The answer names its sources: ``model_version`` is the set's label, with
``+<stage>:<fallback>`` for each stage that fell back on this request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from models import context
from models.cascade import CascadeRequest, Covisits, ItemTable, recommend
from serving.features import ItemStats, RecentItems
from serving.loading import LoadedCascade
from streams.folding import COVISIT_KEEP

# The stream's clock: walk up from the CLOCK_RANK-th most recently active item's last event
# time through newer ones while no gap exceeds CLOCK_GAP_MS. A burst of one user's events
# touches one item per event, so fewer than CLOCK_RANK of them cannot be the anchor, and
# times far ahead of the rest (a live click on a stack that replayed 1998) are past a gap.
CLOCK_RANK = 50
CLOCK_GAP_MS = 24 * 3600 * 1000
HISTORY_REASON = "based on your history"
POPULAR_REASON = "popular right now"
# What each stage normally answers with; anything else is a fallback worth naming.
LEARNED_SOURCES = {"recall": "lightgcn", "rank": "din", "rerank": "ranknet"}


@dataclass(frozen=True)
class ItemFeatures:
    """Raw online values of one set's items, in its item order (all (I,))."""

    trend_score: torch.Tensor  # float64, as of each item's last event
    last_event_time: torch.Tensor  # int64 epoch ms, 0 = never seen
    clicks: torch.Tensor  # int64, clicks on served recommendations
    impressions: torch.Tensor  # int64, 0 until the store has served counts
    latest_event_time: int  # the stream's clock over ALL items read (stream_clock)
    with_stats: int  # vocabulary items the store knows
    covisits: Covisits | None = None  # each item's co-visited neighbours (covisit_table)

    # Each vocabulary item's store row this was built from (None: the store has none):
    # the next refresh rebuilds only the rows that changed (``build(previous=...)``).
    rows: tuple[ItemStats | None, ...] = ()
    # (now, half-life, id(categories)) -> (categories, the ItemTable): see ``table``
    # (never copied by ``dataclasses.replace``: a changed copy computes its own)
    _tables: dict[tuple[int, int, int], tuple[torch.Tensor | None, ItemTable]] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    @classmethod
    def build(
        cls,
        item_ids: tuple[str, ...],
        stats: Mapping[str, ItemStats],
        previous: ItemFeatures | None = None,
    ) -> ItemFeatures:
        """The features of ``item_ids`` from the store's rows ``stats``.

        With ``previous`` (built for the same ``item_ids``), a row that is the same object
        as the one ``previous`` was built from (the reader hands back the object it
        decoded before when the stored bytes are unchanged) keeps its co-visitation row,
        and when no row changed ``previous`` itself is returned: an idle stream costs the
        item refresh a comparison per item, not a rebuild of every neighbour list.
        """
        rows = tuple(stats.get(item_id) for item_id in item_ids)
        if previous is not None and len(previous.rows) != len(rows):
            previous = None
        changed = (
            list(range(len(rows)))
            if previous is None
            else [n for n, (r, p) in enumerate(zip(rows, previous.rows, strict=True)) if r is not p]
        )
        latest = stream_clock([s.last_event_time or 0 for s in stats.values()])
        if previous is not None and not changed and latest == previous.latest_event_time:
            return previous
        index = {item_id: n for n, item_id in enumerate(item_ids)}
        if previous is None or previous.covisits is None or len(changed) > len(rows) // 2:
            covisits = covisit_table([_covisit_source(r) for r in rows], index)
        else:
            covisits = _covisit_rows_replaced(
                previous.covisits, {n: _covisit_source(rows[n]) for n in changed}, index
            )
        return cls(
            trend_score=torch.tensor(
                [r.trend_score if r else 0.0 for r in rows], dtype=torch.float64
            ),
            last_event_time=torch.tensor(
                [(r.last_event_time or 0) if r else 0 for r in rows], dtype=torch.long
            ),
            clicks=torch.tensor([r.click_count if r else 0 for r in rows], dtype=torch.long),
            impressions=torch.zeros(len(rows), dtype=torch.long),
            latest_event_time=latest,
            with_stats=sum(r is not None for r in rows),
            covisits=covisits,
            rows=rows,
        )

    def table(self, now_ms: int, half_life_ms: int, categories: torch.Tensor | None) -> ItemTable:
        """The item table at ``now_ms``; computed once per (now, half-life, categories):
        "now" is the stream's clock, the same for every request until the next refresh
        (``user_now``), so requests share it (read only, never changed in place)."""
        key = (now_ms, half_life_ms, id(categories))
        cached = self._tables.get(key)
        if cached is None or cached[0] is not categories:
            table = self._table(now_ms, half_life_ms, categories)
            self._tables.clear()  # one "now" at a time
            self._tables[key] = (categories, table)
            return table
        return cached[1]

    def _table(self, now_ms: int, half_life_ms: int, categories: torch.Tensor | None) -> ItemTable:
        return ItemTable(
            popularity=context.popularity(
                self.trend_score, self.last_event_time, now_ms, half_life_ms
            ),
            recency=context.recency(self.last_event_time, now_ms),
            ctr=context.ctr(self.clicks, self.impressions),
            categories=categories,
            covisits=self.covisits,
        )


# One item's co-visitation as the store holds it: neighbours, their pair counts, the total.
CovisitRow = tuple[Sequence[str], Sequence[int], int]


def covisit_row(
    row: CovisitRow, index: Mapping[str, int], width: int = COVISIT_KEEP
) -> tuple[list[int], list[float]]:
    """One item's neighbours as item indices and their weights, padded to ``width`` with
    -1 and 0; neighbours outside the vocabulary are skipped."""
    items, weights, _ = row
    kept = [(index[i], float(w)) for i, w in zip(items, weights, strict=False) if i in index]
    kept = kept[:width]
    pad = width - len(kept)
    return [i for i, _ in kept] + [-1] * pad, [w for _, w in kept] + [0.0] * pad


def _padded_row(
    row: CovisitRow | None, index: Mapping[str, int], width: int
) -> tuple[list[int], list[float]]:
    """``covisit_row``, or an all-padding row for an item the store has no row for."""
    return covisit_row(row, index, width) if row else ([-1] * width, [0.0] * width)


def covisit_table(
    rows: Sequence[CovisitRow | None], index: Mapping[str, int], width: int = COVISIT_KEEP
) -> Covisits | None:
    """The vocabulary's co-visitation (rows in item order); None when no item has any."""
    if not any(row and row[0] for row in rows):
        return None
    neighbours, weights, totals = [], [], []
    for row in rows:
        ids, values = _padded_row(row, index, width)
        neighbours.append(ids)
        weights.append(values)
        totals.append(float(row[2]) if row else 0.0)
    return Covisits(
        neighbours=torch.tensor(neighbours, dtype=torch.long),
        weights=torch.tensor(weights, dtype=torch.float32),
        totals=torch.tensor(totals, dtype=torch.float32),
    )


def _covisit_source(row: ItemStats | None) -> CovisitRow | None:
    return (row.covisit_items, row.covisit_weights, row.covisit_total) if row else None


def _covisit_rows_replaced(
    covisits: Covisits,
    replaced: Mapping[int, CovisitRow | None],
    index: Mapping[str, int],
    width: int = COVISIT_KEEP,
) -> Covisits | None:
    """``covisits`` with the rows ``replaced`` (item position -> its new store row) rebuilt;
    the others are copied, never changed in place (a request may still read the old)."""
    neighbours, weights = covisits.neighbours.clone(), covisits.weights.clone()
    totals = covisits.totals.clone()
    for n, row in replaced.items():
        ids, values = _padded_row(row, index, width)
        neighbours[n] = torch.tensor(ids, dtype=torch.long)
        weights[n] = torch.tensor(values, dtype=torch.float32)
        totals[n] = float(row[2]) if row else 0.0
    if not bool((neighbours >= 0).any()):
        return None
    return Covisits(neighbours=neighbours, weights=weights, totals=totals)


@dataclass(frozen=True)
class ServingSet:
    """A loaded set with its current item features; replaced whole, never changed."""

    cascade: LoadedCascade
    items: ItemFeatures


@dataclass(frozen=True)
class CascadePick:
    item_id: str
    score: float
    reason: str
    din_score: float | None = None  # DIN's logit of the pick (None when DIN did not rank)


@dataclass(frozen=True)
class CascadeAnswer:
    picks: list[CascadePick]
    model_version: str
    sources: dict[str, str]  # stage -> what answered


def stream_clock(last_event_times: Sequence[int] | np.ndarray) -> int:
    """The event-time "now" of a table of items (epoch ms; 0 when none was ever seen).

    From the anchor, the CLOCK_RANK-th newest time (for a table under 10 x CLOCK_RANK items
    the ``n // 10``-th, at least the newest), up through newer times while each is within
    CLOCK_GAP_MS of the one before: on a healthy stream that reaches the newest event, and
    a handful of items far ahead of the rest cannot decide it. Any later time reads as
    this "now" (``models.context`` clamps ages at 0). Only the anchor's newest times are
    sorted (the prequential replay asks once per event of a 47k-item table).
    """
    times = np.asarray(last_event_times, dtype=np.int64)
    seen = times[times > 0]
    if seen.size == 0:
        return 0
    position = max(1, min(CLOCK_RANK, seen.size // 10)) - 1
    cut = seen.size - 1 - position
    newest = np.sort(np.partition(seen, cut)[cut:])[::-1]  # the position + 1 newest
    while position > 0 and newest[position - 1] - newest[position] <= CLOCK_GAP_MS:
        position -= 1
    return int(newest[position])


def user_last_event(recent: RecentItems | None) -> int:
    """The user's newest event time (epoch ms); 0 for a user with no history."""
    if recent is None:
        return 0
    return max(recent.last_event_time or 0, max(recent.times, default=0))


def user_now(recent: RecentItems | None, items: ItemFeatures) -> int:
    """The request's event-time "now": the stream's clock, whatever the user's own times.

    A user's live event carries the wall clock; on a stack that replayed an old log it is
    years after everything else, and "now" taken from it would age every item at once.
    The user's own recency is then 1 (ages are clamped at 0), which is what it is.
    """
    return items.latest_event_time


def build_request(
    cascade: LoadedCascade, user_id: str, recent: RecentItems | None, k: int, now_ms: int
) -> CascadeRequest:
    known = (
        [cascade.item_index[i] for i in recent.items if i in cascade.item_index]
        if recent is not None
        else []
    )
    recent_items = torch.tensor(known, dtype=torch.long)
    user_context = torch.zeros(0)
    if cascade.user_context_dim > 0:
        count = (
            recent.interaction_count
            if recent is not None and recent.interaction_count is not None
            else len(recent.items)
            if recent is not None
            else 0
        )
        features = context.user_context(
            torch.tensor(count), torch.tensor(user_last_event(recent)), now_ms
        )  # (2,) [activity, user_recency]
        # A model trained with fewer user features takes the leading ones, more get zeros.
        width = cascade.user_context_dim
        user_context = torch.cat([features, torch.zeros(max(width - features.numel(), 0))])[:width]
    seen = (
        [cascade.item_index[i] for i in recent.seen if i in cascade.item_index]
        if recent is not None
        else []
    )
    return CascadeRequest(
        recent_items=recent_items,
        seen_items=torch.unique(torch.cat([recent_items, torch.tensor(seen, dtype=torch.long)])),
        user_index=cascade.user_index.get(user_id),
        user_context=user_context,
        k=k,
    )


def cascade_inputs(
    serving: ServingSet, user_id: str, recent: RecentItems | None, k: int
) -> tuple[ItemTable, CascadeRequest]:
    """The item table at the user's "now" and the request: what ``recommend`` reads."""
    cascade, items = serving.cascade, serving.items
    now = user_now(recent, items)
    table = items.table(now, cascade.trend_half_life_ms, cascade.categories)
    return table, build_request(cascade, user_id, recent, k, now)


def serve(
    serving: ServingSet,
    user_id: str,
    recent: RecentItems | None,
    k: int,
    titles: Mapping[str, str],
) -> CascadeAnswer:
    """Up to ``k`` picks from the cascade; blocking (one forward pass per stage)."""
    cascade = serving.cascade
    table, request = cascade_inputs(serving, user_id, recent, k)
    result = recommend(models=cascade.models, items=table, request=request, config=cascade.config)
    sources = {
        "recall": result.recall_source,
        "rank": result.rank_source,
        "rerank": result.rerank_source,
    }
    fallback = (
        POPULAR_REASON if result.recall_source in ("popularity", "cold_start") else HISTORY_REASON
    )
    din = (
        result.rank_scores.tolist()
        if result.rank_source == "din" and result.rank_scores is not None
        else [None] * len(result.items)
    )
    picks = []
    for index, score, because, logit in zip(
        result.items.tolist(), result.scores.tolist(), result.reasons.tolist(), din, strict=True
    ):
        if because >= 0:
            past = cascade.item_ids[because]
            reason = f"because you interacted with {titles.get(past, past)}"
        else:
            reason = fallback
        picks.append(CascadePick(cascade.item_ids[index], float(score), reason, logit))
    suffix = "".join(
        f"+{stage}:{source}"
        for stage, source in sources.items()
        if source not in (LEARNED_SOURCES[stage], "none")
    )
    return CascadeAnswer(picks, cascade.label + suffix, sources)
