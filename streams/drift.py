"""Data drift between a reference window of the log and a live one, with the tests and
thresholds monitoring tools apply by default (Evidently's presets):

* a numeric column: two-sample Kolmogorov–Smirnov, drift at p < 0.05, when both samples
  are small (at most 1,000 values); else the Wasserstein distance divided by the
  reference's standard deviation, drift at 0.1 or more;
* a categorical column: chi-squared on the category counts, drift at p < 0.05, when the
  samples are small; else the Jensen–Shannon distance of the two distributions, drift at
  0.1 or more.

The statistics are scipy's; this module only picks the test and builds the columns the
monitor compares: the action mix, the category mix (with a catalogue), user activity
(events per user) and item popularity. Popularity is numeric: each interaction's item
scored by its count in one half of the reference window, so traffic moving to items that
were rare (a popularity inversion) shifts the distribution. The other half of the
reference is scored the same way and is what the live window is compared with: scores of
the very interactions that made the counts would not be independent draws. Item ids as
categories would be too many and too sparse for chi-squared.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats
from scipy.spatial.distance import jensenshannon

SMALL_SAMPLE = 1000
P_VALUE = 0.05
DISTANCE = 0.1


@dataclass(frozen=True)
class DriftResult:
    column: str
    test: str  # ks, wasserstein, chi2 or jensen_shannon
    score: float  # a p-value for ks and chi2, a distance otherwise
    drifted: bool


def numeric_drift(
    column: str, reference: Sequence[float] | np.ndarray, current: Sequence[float] | np.ndarray
) -> DriftResult:
    ref, cur = np.asarray(reference, dtype=float), np.asarray(current, dtype=float)
    if len(ref) == 0 or len(cur) == 0:
        raise ValueError(f"{column}: an empty sample cannot be compared")
    if len(ref) <= SMALL_SAMPLE and len(cur) <= SMALL_SAMPLE:
        p = float(stats.ks_2samp(ref, cur).pvalue)
        return DriftResult(column, "ks", p, p < P_VALUE)
    spread = float(np.std(ref)) or 1.0  # a constant reference: distances in its own units
    distance = float(stats.wasserstein_distance(ref, cur)) / spread
    return DriftResult(column, "wasserstein", distance, distance >= DISTANCE)


def categorical_drift(
    column: str, reference: Mapping[str, int], current: Mapping[str, int]
) -> DriftResult:
    """Counts per category; a category seen on one side only counts zero on the other."""
    categories = sorted(set(reference) | set(current))
    ref = np.array([reference.get(c, 0) for c in categories], dtype=float)
    cur = np.array([current.get(c, 0) for c in categories], dtype=float)
    if ref.sum() == 0 or cur.sum() == 0:
        raise ValueError(f"{column}: an empty sample cannot be compared")
    if ref.sum() <= SMALL_SAMPLE and cur.sum() <= SMALL_SAMPLE and len(categories) > 1:
        # Both windows are samples: a test of homogeneity on the 2 x k table, not a fit
        # of the current counts to the reference's proportions taken as exact.
        p = float(stats.chi2_contingency(np.vstack([ref, cur])).pvalue)
        return DriftResult(column, "chi2", p, p < P_VALUE)
    distance = float(jensenshannon(ref / ref.sum(), cur / cur.sum(), base=2))
    return DriftResult(column, "jensen_shannon", distance, distance >= DISTANCE)


@dataclass(frozen=True)
class Window:
    """The columns the monitor compares, from one window of interactions."""

    actions: Counter[str]
    item_ids: tuple[str, ...]  # in log order
    categories: Counter[str]
    events_per_user: list[int]

    @classmethod
    def of(
        cls,
        user_ids: Sequence[str],
        item_ids: Sequence[str],
        actions: Sequence[str],
        category_of: Mapping[str, str] | None = None,
    ) -> Window:
        categories: Counter[str] = Counter()
        if category_of:
            categories.update(category_of.get(item, "unknown") for item in item_ids)
        return cls(
            actions=Counter(actions),
            item_ids=tuple(item_ids),
            categories=categories,
            events_per_user=list(Counter(user_ids).values()),
        )


def popularity_scores(reference: Window, current: Window) -> tuple[list[float], list[float]]:
    """(held-out reference scores, live scores): each interaction as its item's count in
    the even-numbered interactions of the reference."""
    counts = Counter(reference.item_ids[0::2])
    held_out = [float(counts[item]) for item in reference.item_ids[1::2]]
    return held_out, [float(counts[item]) for item in current.item_ids]


def compare(reference: Window, current: Window) -> list[DriftResult]:
    results = [
        categorical_drift("action", reference.actions, current.actions),
        numeric_drift("item_popularity", *popularity_scores(reference, current)),
        numeric_drift("user_activity", reference.events_per_user, current.events_per_user),
    ]
    if reference.categories and current.categories:
        results.append(categorical_drift("category", reference.categories, current.categories))
    return results
