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
  bias), summed over slots;
- doubly robust: ``mean over lists of sum_r [q(candidate_r, r) + w_r (c_r - q(logged_r, r))]``
  with a simple reward model ``q`` (:class:`RewardModel`: an item's logged click rate at a
  slot, shrunk toward the slot's rate). Unbiased when the propensities are right whatever
  ``q`` is (the correction term removes the model's error), and with lower variance than
  IPS the better ``q`` is. ``q`` is cross-fitted: each half of the lists is scored by the
  model fitted on the other half, so a list's own click never predicts itself.

Intervals are bootstrap intervals over lists (``scipy.stats.bootstrap``, percentile, 95%),
lists being the independent units.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
# How many logged showings an (item, slot) click rate weighs against its slot's rate.
PRIOR_SHOWINGS = 10.0


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
    dr: Estimate


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


@dataclass(frozen=True)
class RewardModel:
    """Clicks expected of an item at a slot: its logged click rate there, shrunk toward
    the slot's rate by ``PRIOR_SHOWINGS`` (an item never logged at a slot gets the slot's
    rate). Deliberately simple: doubly robust needs it only to cut variance."""

    slot_rate: np.ndarray  # (K,)
    clicks: Mapping[tuple[str, int], float]
    shown: Mapping[tuple[str, int], int]

    @classmethod
    def fit(cls, logged: Sequence[LoggedList], k: int) -> RewardModel:
        clicks: dict[tuple[str, int], float] = {}
        shown: dict[tuple[str, int], int] = {}
        slot_clicks, slot_shown = np.zeros(k), np.zeros(k)
        for served in logged:
            for slot, item in enumerate(served.items[:k]):
                click = 1.0 if item in served.clicked else 0.0
                clicks[item, slot] = clicks.get((item, slot), 0.0) + click
                shown[item, slot] = shown.get((item, slot), 0) + 1
                slot_clicks[slot] += click
                slot_shown[slot] += 1
        rate = np.divide(slot_clicks, slot_shown, out=np.zeros(k), where=slot_shown > 0)
        return cls(rate, clicks, shown)

    def predict(self, item: str, slot: int) -> float:
        prior = self.slot_rate[slot]
        showings = self.shown.get((item, slot), 0)
        return float(
            (self.clicks.get((item, slot), 0.0) + PRIOR_SHOWINGS * prior)
            / (showings + PRIOR_SHOWINGS)
        )


def _dr_terms(
    logged: Sequence[LoggedList], candidate: Callable[[LoggedList], Sequence[str]], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """(direct, residuals): per list the model's clicks of the candidate's list (N,), and
    per list and slot the click less the model's prediction of the logged item (N, K);
    cross-fitted over two halves of the lists."""
    direct = np.zeros(len(logged))
    residuals = np.zeros((len(logged), k))
    halves = (range(0, len(logged), 2), range(1, len(logged), 2))
    for fit_on, score in ((halves[1], halves[0]), (halves[0], halves[1])):
        model = RewardModel.fit([logged[i] for i in fit_on], k)
        for row in score:
            served = logged[row]
            wanted = candidate(served)
            direct[row] = sum(model.predict(item, slot) for slot, item in enumerate(wanted[:k]))
            for slot, item in enumerate(served.items[:k]):
                click = 1.0 if item in served.clicked else 0.0
                residuals[row, slot] = click - model.predict(item, slot)
    return direct, residuals


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
    """The candidate's expected clicks per list of ``k``, by IPS, SNIPS and doubly robust."""
    if not logged:
        raise ValueError("no logged lists with propensities to estimate from")
    weights, clicks = _weights(logged, candidate, k)
    direct, residuals = _dr_terms(logged, candidate, k)
    per_list_dr = direct + (weights * residuals).sum(axis=-1)  # (N,)
    rng = np.random.default_rng(seed)
    index = np.arange(len(logged))

    def interval(statistic: Callable[[np.ndarray], np.ndarray]) -> Estimate:
        """``statistic`` of the lists at some row indices, with its bootstrap interval."""

        def on_rows(rows: np.ndarray, axis: int = -1) -> np.ndarray:
            rows = rows.astype(int)
            return np.asarray([statistic(r) for r in np.atleast_2d(rows)]).reshape(rows.shape[:-1])

        value = float(statistic(index))
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
        ips=interval(lambda r: _ips(weights[r], clicks[r])),
        snips=interval(lambda r: _snips(weights[r], clicks[r])),
        dr=interval(lambda r: np.asarray(per_list_dr[r].mean())),
    )


def static_candidate(ranking: Sequence[str]) -> Callable[[LoggedList], Sequence[str]]:
    """A candidate that shows everyone the same ranking (e.g. by popularity)."""
    fixed = list(ranking)
    return lambda _served: fixed


def ranking_by_count(counts: Mapping[str, int]) -> list[str]:
    return sorted(counts, key=lambda item: (-counts[item], item))
