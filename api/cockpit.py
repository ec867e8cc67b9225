"""What the cockpit page shows beside the lists: who the users are, what a user is into,
what is trending, which stage placed an item. Pure functions over what the API already
holds (the log catalogue, the online store's rows), plus the log's user directory.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow.dataset as ds

from api.catalogue import LogCatalogue, LogSignature, log_files, log_signature
from api.experiments.plan import PLAIN_LISTS
from api.ports import HourActivity, ItemStats, RecentItems
from api.schemas import RecommendationOut
from api.serving.baseline import MODEL_VERSION
from streams.events import RecommendationServed
from streams.experiments import INTERLEAVED_VERSIONS

# A user with at least this many events in the log counts as active for "a random user".
ACTIVE_EVENTS = 20
OTHER = "other"


def final_stage(model_version: str) -> str:
    """The stage whose order the list has: the last cascade stage that ran, or what it
    fell back to (``+rerank:rank_order`` means RankNet fell back and DIN's order stands)."""
    if model_version == MODEL_VERSION:
        return "item-knn"
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


HOUR_MS = 3_600_000


@dataclass(frozen=True)
class TrendingHour:
    item_id: str
    last_hour: float  # the worker's interactions in the hour before ``now`` (see below)
    spark_1h: float | None  # the Spark job's count for its 1-hour window, when current
    interactions: int  # all time


def hour_candidates(stats: Mapping[str, ItemStats], now_ms: int) -> list[str]:
    """The items with an event in the hour before ``now_ms``: only they can trend."""
    return [
        item_id
        for item_id, s in stats.items()
        if s.last_event_time is not None and s.last_event_time > now_ms - HOUR_MS
    ]


def trending_hour(
    hours: Mapping[str, HourActivity], stats: Mapping[str, ItemStats], now_ms: int, k: int
) -> list[TrendingHour]:
    """The items with the most interactions in the event-time hour before ``now_ms``.

    The worker keeps each item's count for the hour ending at its own newest 5-minute
    bucket (``end_1h``). An hour that ended ``d`` before now overlaps now's hour by
    ``1 h - d``; its count is scaled by that share (events spread evenly within it), and
    an hour that ended an hour ago or more counts nothing. The Spark job's 1-hour window
    is shown beside it when its window ends within the hour.
    """
    ranked = []
    for item_id, hour in hours.items():
        if hour.end_1h <= 0:
            continue
        overlap = min(1.0, max(0.0, 1.0 - (now_ms - hour.end_1h) / HOUR_MS))
        count = hour.interactions_1h * overlap
        if count <= 0:
            continue
        spark = hour.spark_1h
        if hour.spark_end_1h is None or hour.spark_end_1h <= now_ms - HOUR_MS:
            spark = None
        item = stats.get(item_id)
        ranked.append(
            TrendingHour(item_id, count, spark, item.interaction_count if item is not None else 0)
        )
    ranked.sort(key=lambda t: (-t.last_hour, t.item_id))
    return ranked[:k]
