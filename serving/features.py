"""What one request reads from the online store: a user's recent items, items' counts.

The API's feature reader (``api.ports.FeatureReader``) returns these; the prequential
evaluation builds the same values from the worker's folding functions.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RecentItems:
    """What a user did last, newest first; ``times`` (epoch ms) is parallel to ``items``.

    ``interaction_count`` counts every interaction the user ever had (``items`` keeps only
    the latest few) and ``last_event_time`` is the newest one's time; None where a store
    does not hold them. Both feed the user context features of the ranking model.
    """

    items: tuple[str, ...]
    times: tuple[int, ...]
    interaction_count: int | None = None
    last_event_time: int | None = None
    # Every item the user ever interacted with (``streamrec.infra.seen``): never recommended.
    # Empty where a store does not keep it; ``items`` are excluded in any case.
    seen: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ItemStats:
    """Running counts of one item, as the stream worker folds them."""

    interaction_count: int = 0
    click_count: int = 0
    purchase_count: int = 0
    last_event_time: int | None = None
    trend_score: float = 0.0  # decayed interaction count as of last_event_time
    # co-visited neighbours, heaviest first, their pair counts, and the count of every
    # pair the item was ever in (streams.folding.COVISIT_*); empty where a store has none
    covisit_items: tuple[str, ...] = ()
    covisit_weights: tuple[int, ...] = ()
    covisit_total: int = 0
