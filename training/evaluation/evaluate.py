"""Evaluate any scorer on a time split: full ranking over all candidates, no sampling.

A scorer maps a batch of user indices to a (batch, n_items) score matrix over the
split's candidates. :func:`evaluate` masks each user's training items itself (so a
scorer cannot forget to), ranks every remaining candidate, and averages per-user
metrics over all evaluated users and over the activity slices of
:mod:`training.evaluation.metrics`. Scores are compared as given; ties go to the more popular item
(the lower item index, see :mod:`training.data.split`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from training.data.split import TimeSplit
from training.evaluation.metrics import (
    RETURNING,
    SLICES,
    activity_slices,
    item_coverage,
    popularity_bias,
    popularity_percentile,
    ranking_metrics,
    relevant_dense,
    top_k,
)

Scorer = Callable[[np.ndarray], np.ndarray]
DEFAULT_KS: tuple[int, ...] = (10, 20, 50, 100, 200)
# Coverage and popularity bias describe what a user would see: the short lists.
MAX_LIST_K = 20


def evaluate(
    scorer: Scorer,
    split: TimeSplit,
    ks: Sequence[int] = DEFAULT_KS,
    target: str = "test",
    batch_size: int = 1024,
) -> dict[str, Any]:
    """Metrics of ``scorer`` on ``split``'s ``target`` period.

    Returns ``{"n_users", "<metric>@<k>" ..., "coverage@k", "popularity_bias@k",
    "slices": {slice: {"n_users", "<metric>@<k>" ...}}, "light_heavy_threshold"}``
    where metrics are means over evaluated users.
    """
    ks = sorted(set(ks))
    goal = split.target(target)
    k_max = min(max(ks), split.n_items)
    ks = [k for k in ks if k <= split.n_items]
    list_ks = [k for k in ks if k <= MAX_LIST_K]
    percentile = popularity_percentile(split.item_popularity)
    slice_of, threshold = activity_slices(split.user_activity, split.n_train_users)

    per_user: dict[str, list[np.ndarray]] = {}
    recommended: dict[int, list[np.ndarray]] = {k: [] for k in list_ks}
    for start in range(0, len(goal.users), batch_size):
        rows = np.arange(start, min(start + batch_size, len(goal.users)))
        users = goal.users[rows]
        scores = np.asarray(scorer(users), dtype=np.float64)
        if scores.shape != (len(users), split.n_items):
            raise ValueError(
                f"scorer returned shape {scores.shape}, expected {(len(users), split.n_items)}"
            )
        scores = np.where(split.train_matrix[users].toarray() > 0, -np.inf, scores)
        top = top_k(scores, k_max)
        for name, values in ranking_metrics(top, relevant_dense(goal.relevant, rows), ks).items():
            per_user.setdefault(name, []).append(values)
        valid = np.isfinite(np.take_along_axis(scores, top, axis=1))
        for k in list_ks:
            recommended[k].append(top[:, :k][valid[:, :k]])

    names = [f"{metric}@{k}" for k in ks for metric in ("recall", "ndcg", "hit")]
    columns = {
        name: np.concatenate(per_user[name]) if name in per_user else np.empty(0) for name in names
    }
    result: dict[str, Any] = {"target": target, "n_users": int(len(goal.users))}
    # No evaluated users gives None rather than a mean of nothing.
    result.update({name: _mean(values) for name, values in columns.items()})
    for k in list_ks:
        shown = np.concatenate(recommended[k]) if recommended[k] else np.empty(0, np.int64)
        result[f"coverage@{k}"] = item_coverage(shown, split.n_items)
        result[f"popularity_bias@{k}"] = popularity_bias(shown, percentile) if shown.size else None
    labels = slice_of[goal.users]
    members = {name: labels == name for name in SLICES}
    members[RETURNING] = labels != "new"
    result["slices"] = {
        name: {
            "n_users": int(member.sum()),
            **{metric: _mean(values[member]) for metric, values in columns.items()},
        }
        for name, member in members.items()
    }
    result["light_heavy_threshold"] = threshold
    return result


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if len(values) else None


def evaluate_seeds(
    build_scorer: Callable[[int], Scorer],
    split: TimeSplit,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    ks: Sequence[int] = DEFAULT_KS,
    target: str = "test",
) -> dict[str, Any]:
    """Train and evaluate a stochastic method once per seed.

    Returns ``{"seeds", "mean", "std", "runs"}``; ``mean`` and ``std`` (sample standard
    deviation, ddof=1; 0 for a single seed) mirror the shape of one :func:`evaluate`
    result, numeric leaves only.
    """
    runs = [evaluate(build_scorer(seed), split, ks=ks, target=target) for seed in seeds]
    return {
        "seeds": list(seeds),
        "mean": _aggregate(runs, np.mean),
        "std": _aggregate(runs, _sample_std),
        "runs": runs,
    }


def _sample_std(values: np.ndarray) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _aggregate(
    runs: Sequence[Mapping[str, Any]], reduce: Callable[[np.ndarray], Any]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, first in runs[0].items():
        if isinstance(first, Mapping):
            out[key] = _aggregate([run[key] for run in runs], reduce)
        elif isinstance(first, bool | str) or first is None:
            continue
        elif isinstance(first, int | float):
            values = [run[key] for run in runs]
            if any(value is None for value in values):
                continue
            out[key] = float(reduce(np.asarray(values, dtype=np.float64)))
    return out
