"""The values the cockpit reads from the online store besides a request's features."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HourActivity:
    """One item's interactions in an event-time hour, from the worker and from Spark."""

    interactions_1h: int = 0  # the worker's count for the hour ending at ``end_1h``
    end_1h: int = 0  # epoch ms, exclusive; 0: the worker has no hour for the item
    spark_1h: float | None = None  # the Spark job's 1-hour window count, if it ran
    spark_end_1h: int | None = None  # epoch ms: the end of that window


@dataclass(frozen=True)
class LongInterests:
    """A user's top categories with their shares over the Spark job's long window."""

    weights: dict[str, float]
    window_end: int  # epoch ms
