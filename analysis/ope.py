"""Off-policy estimates of a candidate ranking's clicks per list, from logged slates.

The served events of an exploring experiment log every item's propensity: the chance the
logging policy had of putting that item in that slot (``api.experiments.definitions.
explore``). Under the position-based click model (a click at slot r depends only on the
item there and on r), the candidate's expected clicks per list are the sum over slots of
the clicks its item would get there, and each slot is estimated from the logged lists
whose slot r holds the candidate's item r:

- IPS: ``mean over lists of sum_r w_r c_r`` with ``w_r = [logged_r == candidate_r] / p_r``;
  unbiased when every propensity is right and positive;
- SNIPS: per slot, ``sum w_r c_r / sum w_r`` (self-normalised: lower variance, a small
  bias), summed over slots.

Intervals are bootstrap intervals over lists (``scipy.stats.bootstrap``, percentile, 95%),
lists being the independent units. No reward model, so no doubly robust estimate yet.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


@dataclass(frozen=True)
class LoggedList:
    """One served list: its items and their propensities in rank order, and the items
    clicked (attributed to this list)."""

    user_id: str
    items: tuple[str, ...]
    propensities: tuple[float, ...]
    clicked: frozenset[str]


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float


@dataclass(frozen=True)
class OffPolicy:
    lists: int
    matched_slots: int  # logged slots that hold the candidate's item: the evidence
    ips: Estimate
    snips: Estimate


def _weights(
    logged: Sequence[LoggedList], candidate: Callable[[LoggedList], Sequence[str]], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """(weights, clicks), each (N, K): per list and slot, ``[match] / p`` and the click."""
    weights = np.zeros((len(logged), k))
    clicks = np.zeros((len(logged), k))
    for row, served in enumerate(logged):
        wanted = candidate(served)
        for slot, (item, propensity) in enumerate(
            zip(served.items[:k], served.propensities[:k], strict=True)
        ):
            if slot < len(wanted) and wanted[slot] == item:
                weights[row, slot] = 1.0 / propensity
            clicks[row, slot] = 1.0 if item in served.clicked else 0.0
    return weights, clicks


def _ips(weights: np.ndarray, clicks: np.ndarray, axis: int = 0) -> np.ndarray:
    return np.asarray((weights * clicks).sum(axis=-1).mean(axis=axis))


def _snips(weights: np.ndarray, clicks: np.ndarray, axis: int = 0) -> np.ndarray:
    total = weights.sum(axis=axis)
    rewarded = (weights * clicks).sum(axis=axis)
    per_slot = np.divide(rewarded, total, out=np.zeros_like(rewarded), where=total > 0)
    return np.asarray(per_slot.sum(axis=-1))


def estimate(
    logged: Sequence[LoggedList],
    candidate: Callable[[LoggedList], Sequence[str]],
    k: int,
    *,
    seed: int = 0,
    resamples: int = 999,
) -> OffPolicy:
    """The candidate's expected clicks per list of ``k``, by IPS and SNIPS."""
    if not logged:
        raise ValueError("no logged lists with propensities to estimate from")
    weights, clicks = _weights(logged, candidate, k)
    rng = np.random.default_rng(seed)
    index = np.arange(len(logged))

    def interval(statistic: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Estimate:
        def on_rows(rows: np.ndarray, axis: int = -1) -> np.ndarray:
            rows = rows.astype(int)
            return np.asarray(
                [statistic(weights[r], clicks[r]) for r in np.atleast_2d(rows)]
            ).reshape(rows.shape[:-1])

        value = float(statistic(weights, clicks))
        result = stats.bootstrap(
            (index,),
            on_rows,
            n_resamples=resamples,
            confidence_level=CONFIDENCE,
            method="percentile",
            random_state=rng,
            vectorized=True,
        )
        ci = result.confidence_interval
        return Estimate(value, float(ci.low), float(ci.high))

    return OffPolicy(
        lists=len(logged),
        matched_slots=int((weights > 0).sum()),
        ips=interval(_ips),
        snips=interval(_snips),
    )


def static_candidate(ranking: Sequence[str]) -> Callable[[LoggedList], Sequence[str]]:
    """A candidate that shows everyone the same ranking (e.g. by popularity)."""
    fixed = list(ranking)
    return lambda _served: fixed


def ranking_by_count(counts: Mapping[str, int]) -> list[str]:
    return sorted(counts, key=lambda item: (-counts[item], item))
