"""Online NDCG@10 and Hit@10 from the served-slate log: the prequential protocol, live.

For each user's next interaction with an item new to them, the rank of that item in the
last list served to the user before it: NDCG@10 is 1/log2(rank + 1) when the rank is at
most 10, else 0 (one relevant item, so the ideal DCG is 1); Hit@10 is whether it was in the
top 10. The offline evaluation (``training.evaluation.prequential``) scores the same event
against a list computed for it; here the list is the one the user was actually shown.

"Before" is the order the log received them (the records' Kafka timestamps), not event
time: a replayed interaction carries its 1998 event time while the list served just before
it carries today's. A list older than ``max_list_age_ms`` scores nothing: the user has
moved on. Each figure is the mean over the newest ``window`` scored interactions of each
model version.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

K = 10


def version_label(model_version: str) -> str:
    """The set a list came from, without the fallbacks' suffixes (``+recall:popularity``),
    so the metric's label values stay as few as the sets served."""
    return model_version.split("+", 1)[0]


@dataclass(frozen=True)
class ServedList:
    model_version: str
    items: tuple[str, ...]  # in rank order
    received_ms: int


@dataclass(frozen=True)
class Scored:
    model_version: str
    rank: int | None  # None: not in the list
    ndcg: float
    hit: float


def score_rank(rank: int | None, k: int = K) -> tuple[float, float]:
    if rank is None or rank > k:
        return 0.0, 0.0
    return 1.0 / math.log2(rank + 1), 1.0


@dataclass
class QualityWindow:
    ndcg: deque[float]
    hit: deque[float]
    scored: int = 0

    def add(self, scored: Scored) -> None:
        self.ndcg.append(scored.ndcg)
        self.hit.append(scored.hit)
        self.scored += 1

    @property
    def full(self) -> bool:
        return len(self.ndcg) == self.ndcg.maxlen

    def means(self) -> tuple[float, float]:
        n = len(self.ndcg)
        return (sum(self.ndcg) / n, sum(self.hit) / n) if n else (math.nan, math.nan)


@dataclass
class OnlineQuality:
    """Per-user state in bounded memory: the last list and the items already interacted
    with (the least recently active users are forgotten first)."""

    window: int = 500
    max_list_age_ms: int = 30 * 60 * 1000
    max_users: int = 200_000
    max_seen_per_user: int = 500
    _lists: OrderedDict[str, ServedList] = field(default_factory=OrderedDict)
    _seen: OrderedDict[str, OrderedDict[str, None]] = field(default_factory=OrderedDict)
    windows: dict[str, QualityWindow] = field(default_factory=dict)

    def served(
        self, user_id: str, model_version: str, items: Sequence[str], received_ms: int
    ) -> None:
        self._lists[user_id] = ServedList(version_label(model_version), tuple(items), received_ms)
        self._lists.move_to_end(user_id)
        while len(self._lists) > self.max_users:
            self._lists.popitem(last=False)

    def interaction(self, user_id: str, item_id: str, received_ms: int) -> Scored | None:
        """Score the interaction if it is the user's first with the item and a recent list
        was served to them before it; then remember the item."""
        seen = self._seen.setdefault(user_id, OrderedDict())
        self._seen.move_to_end(user_id)
        new = item_id not in seen
        seen[item_id] = None
        if len(seen) > self.max_seen_per_user:
            seen.popitem(last=False)
        while len(self._seen) > self.max_users:
            self._seen.popitem(last=False)
        served = self._lists.get(user_id)
        if not new or served is None or received_ms - served.received_ms > self.max_list_age_ms:
            return None
        if received_ms < served.received_ms:
            return None
        rank = served.items.index(item_id) + 1 if item_id in served.items else None
        ndcg, hit = score_rank(rank)
        scored = Scored(served.model_version, rank, ndcg, hit)
        window = self.windows.get(served.model_version)
        if window is None:
            window = QualityWindow(deque(maxlen=self.window), deque(maxlen=self.window))
            self.windows[served.model_version] = window
        window.add(scored)
        return scored
