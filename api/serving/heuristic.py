"""The heuristic recommender used until trained models exist: pure logic, no I/O.

Two signals:

* item-to-item co-occurrence, counted over each user's time-ordered interactions: items
  that follow one another within a few steps are neighbours. Weights are normalised by
  both items' frequencies (cosine-like), so a blockbuster is not everyone's neighbour;
* popularity, from the items' running counts.

A user's most recent items vote for their neighbours (newer items weigh more); popular
items fill the rest of the list. Items the user interacted with are never recommended.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from api.ports import ItemStats
from serving.cascade import POPULAR_REASON

MODEL_VERSION = "heuristic-cooc-v1"


@dataclass(frozen=True)
class CooccurrenceIndex:
    """Top neighbours of each item, best first: item_id -> ((neighbour, weight), ...)."""

    neighbours: Mapping[str, tuple[tuple[str, float], ...]] = field(default_factory=dict)
    events: int = 0

    def __len__(self) -> int:
        return len(self.neighbours)


def build_cooccurrence(
    events: pd.DataFrame, *, window: int = 5, top_n: int = 50, min_count: int = 2
) -> CooccurrenceIndex:
    """Count item pairs within ``window`` steps of each user's sequence; keep ``top_n``.

    ``events`` has columns user_id, item_id, event_time. Back-to-back repeats of one item
    (a view then a click of the same thing) count as one step. Pairs seen fewer than
    ``min_count`` times are noise and dropped. Vectorised: the pairs of one offset at a
    time become integer keys, so memory is a few int64 arrays the size of the log.
    """
    if events.empty:
        return CooccurrenceIndex()
    ordered = events.sort_values(["user_id", "event_time"], kind="stable")
    users = pd.factorize(ordered["user_id"])[0]
    item_codes, item_names = pd.factorize(ordered["item_id"])
    users = np.asarray(users, dtype=np.int64)
    item_codes = np.asarray(item_codes, dtype=np.int64)
    repeat = np.zeros(len(item_codes), dtype=bool)
    repeat[1:] = (users[1:] == users[:-1]) & (item_codes[1:] == item_codes[:-1])
    users, item_codes = users[~repeat], item_codes[~repeat]
    n_items = len(item_names)
    frequency = np.bincount(item_codes, minlength=n_items).astype(np.float64)

    keys = []
    for offset in range(1, window + 1):
        same_user = users[offset:] == users[:-offset]
        first, second = item_codes[:-offset][same_user], item_codes[offset:][same_user]
        distinct = first != second
        first, second = first[distinct], second[distinct]
        keys.append(first * n_items + second)
        keys.append(second * n_items + first)
    if not keys:
        return CooccurrenceIndex(events=len(events))
    pair_keys, counts = np.unique(np.concatenate(keys), return_counts=True)
    keep = counts >= min_count
    pair_keys, counts = pair_keys[keep], counts[keep]
    sources, targets = pair_keys // n_items, pair_keys % n_items
    weights = counts / np.sqrt(frequency[sources] * frequency[targets])

    # Best first within each source item, then cut every group at top_n.
    order = np.lexsort((targets, -weights, sources))
    sources, targets, weights = sources[order], targets[order], weights[order]
    group_start = np.r_[0, np.flatnonzero(np.diff(sources)) + 1]
    rank = np.arange(len(sources)) - np.repeat(
        group_start, np.diff(np.r_[group_start, len(sources)])
    )
    keep = rank < top_n
    neighbours: dict[str, list[tuple[str, float]]] = {}
    for source, target, weight in zip(
        sources[keep].tolist(), targets[keep].tolist(), weights[keep].tolist(), strict=True
    ):
        neighbours.setdefault(str(item_names[source]), []).append((str(item_names[target]), weight))
    return CooccurrenceIndex(
        neighbours={item: tuple(pairs) for item, pairs in neighbours.items()}, events=len(events)
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
    recent_items: Sequence[str],
    k: int,
    *,
    index: CooccurrenceIndex,
    popularity: PopularityRanking,
    recent_depth: int = 10,
    recency_decay: float = 0.8,
    popularity_weight: float = 0.1,
    exclude: Collection[str] = (),
) -> list[Scored]:
    """Up to ``k`` items for a user whose recent items are ``recent_items``, newest first.

    Score = co-occurrence score normalised to 1 at the best candidate, plus
    ``popularity_weight`` x normalised popularity. Every recent item is excluded, and so
    is every item in ``exclude`` (what the user already has).
    """
    seen = set(recent_items).union(exclude)
    votes: dict[str, dict[str, float]] = {}
    for position, source in enumerate(recent_items[:recent_depth]):
        decay = recency_decay**position
        for neighbour, weight in index.neighbours.get(source, ()):
            if neighbour in seen:
                continue
            by_source = votes.setdefault(neighbour, {})
            by_source[source] = by_source.get(source, 0.0) + decay * weight

    totals = {item: sum(by_source.values()) for item, by_source in votes.items()}
    best = max(totals.values(), default=0.0)
    scored: dict[str, Scored] = {}
    for item, total in totals.items():
        by_source = votes[item]
        because_of = max(by_source, key=lambda s: (by_source[s], s))
        score = total / best + popularity_weight * popularity.scores.get(item, 0.0)
        scored[item] = Scored(item, score, because_of)

    # Enough popular candidates to fill the list even after dropping seen and scored ones.
    fill_needed = k
    for item in popularity.items:
        if fill_needed == 0:
            break
        if item in seen or item in scored:
            continue
        scored[item] = Scored(item, popularity_weight * popularity.scores[item], None)
        fill_needed -= 1

    ranked = sorted(scored.values(), key=lambda s: (-s.score, s.item_id))
    return ranked[:k]


def reason(scored: Scored, titles: Mapping[str, str]) -> str:
    if scored.because_of is None:
        return POPULAR_REASON
    return f"because you interacted with {titles.get(scored.because_of, scored.because_of)}"
