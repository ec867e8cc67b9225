"""What the cockpit page shows beside the lists: who the users are, what a user is into,
what is trending, which stage placed an item. Pure functions over what the API already
holds (the log catalogue, the online store's rows), plus the log's user directory.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow.dataset as ds

from api.catalogue import LogCatalogue, LogSignature, log_files, log_signature
from api.experiments.plan import INTERLEAVED_VERSIONS, PLAIN_LISTS
from api.ports import ItemStats, RecentItems
from api.schemas import RecommendationOut
from api.serving.heuristic import MODEL_VERSION
from streams.events import RecommendationServed
from streams.folding import TREND_HALF_LIFE_MS

# A user with at least this many events in the log counts as active for "a random user".
ACTIVE_EVENTS = 20
OTHER = "other"


def final_stage(model_version: str) -> str:
    """The stage whose order the list has: the last cascade stage that ran, or what it
    fell back to (``+rerank:rank_order`` means RankNet fell back and DIN's order stands)."""
    if model_version == MODEL_VERSION:
        return "heuristic"
    if model_version in PLAIN_LISTS:  # experiment strategies without a model
        return model_version
    if INTERLEAVED_VERSIONS in model_version:  # two variants' lists merged
        return "interleaved"
    fallbacks = dict(part.split(":", 1) for part in model_version.split("+")[1:] if ":" in part)
    if "rerank" not in fallbacks:
        return "ranknet"
    if "rank" not in fallbacks:
        return "din"
    return fallbacks.get("recall", "lightgcn")


def recommendation_out(served: RecommendationServed, catalogue: LogCatalogue) -> RecommendationOut:
    """The answer to a client: the served list with each item's title, main category and
    the stage that placed it, so no client joins the raw item file."""
    return RecommendationOut.from_event(
        served, catalogue.titles, catalogue.categories, final_stage(served.model_version)
    )


@dataclass(frozen=True)
class UserDirectory:
    """User ids of the prepared logs with their event counts, for search and picking."""

    counts: dict[str, int]
    signature: LogSignature = ()

    @classmethod
    def read(cls, log_dir: Path) -> UserDirectory:
        """Blocking Parquet reads: call from a worker thread."""
        counts: Counter[str] = Counter()
        events, _ = log_files(log_dir)
        for path in events:
            table = ds.dataset(path, format="parquet").to_table(columns=["user_id"])
            grouped = table.group_by("user_id").aggregate([("user_id", "count")])
            for user, count in zip(
                grouped["user_id"].to_pylist(), grouped["user_id_count"].to_pylist(), strict=True
            ):
                counts[str(user)] += int(count)
        return cls(dict(counts), log_signature(log_dir))

    def search(self, text: str, limit: int) -> list[str]:
        """Ids that start with ``text``, the most active first."""
        prefix = text.strip()
        matches = [u for u in self.counts if u.startswith(prefix)]
        matches.sort(key=lambda u: (u != prefix, -self.counts[u], u))
        return matches[:limit]

    def random_active(self, rng: random.Random) -> str | None:
        active = [u for u, n in self.counts.items() if n >= ACTIVE_EVENTS] or list(self.counts)
        return rng.choice(sorted(active)) if active else None


def interest_shares(
    recent: RecentItems | None, categories: Mapping[str, Sequence[str]]
) -> dict[str, float]:
    """Share of each category among the user's recent items (the worker's state): an item
    with several categories splits its weight among them; one with none counts as other."""
    if recent is None or not recent.items:
        return {}
    weights: dict[str, float] = {}
    for item in recent.items:
        names = categories.get(item) or (OTHER,)
        for name in names:
            weights[name] = weights.get(name, 0.0) + 1.0 / len(names)
    total = sum(weights.values())
    ranked = sorted(weights.items(), key=lambda kv: (-kv[1], kv[0]))
    return {name: round(w / total, 4) for name, w in ranked}


@dataclass(frozen=True)
class Trending:
    item_id: str
    score: float  # interactions decayed to now (half-life TREND_HALF_LIFE_MS of event time)
    interactions: int


def trending(stats: Mapping[str, ItemStats], k: int) -> list[Trending]:
    """The items with the highest trend score decayed to the newest event time seen, so
    items are compared at one instant (each row is stored as of its own last event)."""
    times = [s.last_event_time for s in stats.values() if s.last_event_time is not None]
    if not times:
        return []
    now = max(times)
    scored = [
        Trending(
            item_id,
            s.trend_score * math.pow(0.5, (now - s.last_event_time) / TREND_HALF_LIFE_MS),
            s.interaction_count,
        )
        for item_id, s in stats.items()
        if s.last_event_time is not None and s.trend_score > 0
    ]
    scored.sort(key=lambda t: (-t.score, t.item_id))
    return scored[:k]
