"""The reference a model set is monitored against: the distributions of its training window,
saved with the set in the registry (``training.monitoring.reference``) and compared with
live windows by the drift job and the monitor.

Every distribution is stored as counts (a value, or a category, and how often it was
seen), so a reference of a long training window stays small; the numeric ones are expanded
back to samples for scipy. Each column says what it is measured on:

* ``actions``, ``categories``: the mix over the training window (categories through
  ``category_of``, each catalogued item's first category, stored with the reference so live
  traffic is mapped the way training saw it);
* ``item_counts`` and ``popularity``: an item's count in the even-numbered interactions of
  the training window, and those counts as scores of the odd-numbered ones (the held-out
  side, see ``streams.drift.popularity_scores``); a live interaction is scored by the same
  counts;
* ``user_activity``: events per user in consecutive chunks of ``window_events``
  interactions, the size of the live windows it is compared with (activity depends on it);
* ``click_ranks``: the position of every click in its list;
* ``din_scores``: DIN's logits of the items the set's cascade put in its lists when it was
  replayed over the validation period (the prequential harness calls the function the API
  serves with), compared with the ``din_score`` the served events carry.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from streams.drift import DriftResult, Window, categorical_drift, numeric_drift

REFERENCE_VERSION = 1
MIN_CLICKS = 200  # fewer make the distance to a large reference mostly noise (0.15 at 50)
MIN_DIN_SCORES = 200  # the same floor for DIN's scores of served items
UNKNOWN_CATEGORY = "unknown"


def _value_counts(values: Iterable[float]) -> dict[str, int]:
    """{value as text: count}; JSON keys are text."""
    return {repr(float(v)): int(n) for v, n in sorted(Counter(values).items())}


def _expand(counts: Mapping[str, int]) -> np.ndarray:
    if not counts:
        return np.zeros(0)
    values = np.array([float(v) for v in counts], dtype=float)
    return np.repeat(values, np.array(list(counts.values()), dtype=int))


@dataclass(frozen=True)
class Reference:
    until_ms: int  # the end of the training window (exclusive)
    events: int  # interactions in the training window
    window_events: int  # the live window size user activity was measured for
    actions: dict[str, int]
    categories: dict[str, int]
    category_of: dict[str, str]
    item_counts: dict[str, int]
    popularity: dict[str, int]  # held-out popularity score -> count
    user_activity: dict[str, int]  # events per user in a chunk -> count
    click_ranks: dict[str, int] = field(default_factory=dict)
    din_scores: list[float] = field(default_factory=list)
    version: int = REFERENCE_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Reference:
        raw: dict[str, Any] = json.loads(text)
        if raw.get("version") != REFERENCE_VERSION:
            raise ValueError(f"reference version {raw.get('version')} is not {REFERENCE_VERSION}")
        return cls(**raw)

    def summary(self) -> dict[str, Any]:
        """A few figures a person reads in MLflow or the log."""
        return {
            "until_ms": self.until_ms,
            "events": self.events,
            "window_events": self.window_events,
            "items": len(self.item_counts),
            "categories": len(self.categories),
            "clicks": sum(self.click_ranks.values()),
            "din_scores": len(self.din_scores),
        }


def build_reference(
    *,
    until_ms: int,
    user_ids: Sequence[str],
    item_ids: Sequence[str],
    actions: Sequence[str],
    window_events: int,
    category_of: Mapping[str, str] | None = None,
    click_ranks: Sequence[int] = (),
    din_scores: Sequence[float] = (),
) -> Reference:
    """The reference of one training window; the interactions in log (event-time) order."""
    if window_events < 1:
        raise ValueError(f"window_events must be at least 1, got {window_events}")
    if not item_ids:
        raise ValueError("a reference needs at least one interaction")
    mapping = dict(category_of or {})
    window = Window.of(user_ids, item_ids, actions, mapping)
    counts = Counter(item_ids[0::2])
    held_out = [float(counts[item]) for item in item_ids[1::2]] or [float(counts[item_ids[0]])]
    activity: list[int] = []
    for start in range(0, max(1, len(user_ids) - window_events + 1), window_events):
        activity.extend(Counter(user_ids[start : start + window_events]).values())
    return Reference(
        until_ms=int(until_ms),
        events=len(item_ids),
        window_events=window_events,
        actions=dict(window.actions),
        categories=dict(window.categories),
        category_of=mapping,
        item_counts={item: int(n) for item, n in counts.items()},
        popularity=_value_counts(held_out),
        user_activity=_value_counts(activity),
        click_ranks=_value_counts(click_ranks),
        din_scores=[round(float(s), 5) for s in din_scores],
    )


@dataclass(frozen=True)
class LiveWindow:
    """The newest live interactions (and clicks) the reference is compared with."""

    user_ids: Sequence[str]
    item_ids: Sequence[str]
    actions: Sequence[str]
    click_ranks: Sequence[int] = ()
    din_scores: Sequence[float] = ()  # DIN's logits of the serving set's served items


def compare_with_reference(reference: Reference, live: LiveWindow) -> list[DriftResult]:
    """One test per column (``streams.drift`` picks KS or Wasserstein, chi-squared or
    Jensen–Shannon by sample size). User activity is compared only on a window of the size
    it was measured for; click positions and DIN's scores only with enough of them."""
    if not live.item_ids:
        raise ValueError("an empty live window cannot be compared")
    results = [
        categorical_drift("action", reference.actions, Counter(live.actions)),
        numeric_drift(
            "item_popularity",
            _expand(reference.popularity),
            [float(reference.item_counts.get(item, 0)) for item in live.item_ids],
        ),
    ]
    if reference.categories:
        live_categories = Counter(
            reference.category_of.get(item, UNKNOWN_CATEGORY) for item in live.item_ids
        )
        results.append(categorical_drift("category", reference.categories, live_categories))
    if len(live.user_ids) == reference.window_events and reference.user_activity:
        results.append(
            numeric_drift(
                "user_activity",
                _expand(reference.user_activity),
                list(Counter(live.user_ids).values()),
            )
        )
    if reference.click_ranks and len(live.click_ranks) >= MIN_CLICKS:
        results.append(
            numeric_drift("click_position", _expand(reference.click_ranks), list(live.click_ranks))
        )
    if len(reference.din_scores) >= MIN_DIN_SCORES and len(live.din_scores) >= MIN_DIN_SCORES:
        results.append(numeric_drift("din_score", reference.din_scores, list(live.din_scores)))
    return results
