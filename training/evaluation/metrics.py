"""Full-ranking metrics, AUC/GAUC, coverage, popularity bias and activity slices.

Definitions (binary relevance, one row per evaluated user):

- Recall@K = relevant items in the top K / all relevant items of the user.
- NDCG@K = DCG@K / ideal DCG@K with gain 1 and discount 1/log2(rank + 1), rank from 1;
  the ideal ranking puts min(|relevant|, K) relevant items first.
- HitRate@K = 1 if any relevant item is in the top K.
- AUC = probability that a random positive outscores a random negative, ties count 1/2.
- GAUC = per-user AUC averaged with weights (the user's impressions by default, as in
  the DIN paper); users whose labels are all one class have no AUC and are left out.
- item coverage@K = share of candidates that appear in at least one user's top K.
- popularity bias@K = mean training-popularity percentile of the recommended items
  (1.0 = the most popular item, 0.0 = the least), over every recommended slot.
- activity slices: "new" = no training events; among training users, "light" has at most
  the median number of training events and "heavy" more (the median over all training
  users, not only the evaluated ones, so the threshold does not depend on the period).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from scipy.stats import rankdata

SLICES = ("new", "light", "heavy")
# Light and heavy users together: every user with training history. The reference
# figures (recent popularity .24, all-time popularity and ItemKNN .15 on MovieLens-100K)
# are those baselines on these users (reports/baselines.json, protocol variants).
RETURNING = "returning"


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """(B, k) item indices by descending score; ties go to the lower item index.

    ``argpartition`` finds the top k in linear time; rows whose k-th score is tied with
    an item outside the partition fall back to a stable full sort, so the result never
    depends on partition order.
    """
    n_items = scores.shape[1]
    k = min(k, n_items)
    if k == n_items:
        return np.argsort(-scores, axis=1, kind="stable")
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(scores, part, axis=1)
    kth = part_scores.min(axis=1, keepdims=True)
    # A row is ambiguous if more items reach its k-th score than fit in the top k.
    ambiguous = (scores >= kth).sum(axis=1) > k
    # Within the partition: descending score, then ascending item index.
    order = np.lexsort((part, -part_scores), axis=1)
    top = np.take_along_axis(part, order, axis=1)
    if ambiguous.any():
        top[ambiguous] = np.argsort(-scores[ambiguous], axis=1, kind="stable")[:, :k]
    return top


def discounts(k: int) -> np.ndarray:
    """(k,) NDCG's position discounts 1 / log2(rank + 1), rank from 1."""
    return 1.0 / np.log2(np.arange(2, k + 2))


def ranking_metrics(
    top: np.ndarray, relevant: np.ndarray, ks: Sequence[int]
) -> dict[str, np.ndarray]:
    """Per-user Recall@K, NDCG@K and HitRate@K.

    ``top`` is (B, Kmax) ranked item indices with Kmax >= max(ks); ``relevant`` is a
    (B, n_items) boolean matrix; every row must have at least one relevant item.
    """
    n_relevant = relevant.sum(axis=1)
    if (n_relevant == 0).any():
        raise ValueError("every evaluated user needs at least one relevant item")
    if top.shape[1] < max(ks):
        raise ValueError(f"top has {top.shape[1]} columns, fewer than K={max(ks)}")
    hits = np.take_along_axis(relevant, top, axis=1).astype(np.float64)
    discount = discounts(top.shape[1])
    cum_hits = np.cumsum(hits, axis=1)
    cum_dcg = np.cumsum(hits * discount, axis=1)
    cum_ideal = np.cumsum(discount)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        ideal = cum_ideal[np.minimum(n_relevant, k) - 1]
        out[f"recall@{k}"] = cum_hits[:, k - 1] / n_relevant
        out[f"ndcg@{k}"] = cum_dcg[:, k - 1] / ideal
        out[f"hit@{k}"] = (cum_hits[:, k - 1] > 0).astype(np.float64)
    return out


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC by the rank-sum statistic (average ranks for ties); NaN if one class only."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel().astype(bool)
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def gauc(
    groups: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    weighting: str = "impressions",
) -> float:
    """Group (user) AUC: per-group AUC, weighted by impressions or uniformly.

    Groups with only positives or only negatives are skipped. NaN if none is left.
    """
    if weighting not in ("impressions", "uniform"):
        raise ValueError(f"weighting must be 'impressions' or 'uniform', got {weighting!r}")
    groups = np.asarray(groups).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel().astype(bool)
    order = np.argsort(groups, kind="stable")
    groups, scores, labels = groups[order], scores[order], labels[order]
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    ends = np.r_[starts[1:], len(groups)]
    total = weight_sum = 0.0
    for start, end in zip(starts, ends, strict=True):
        value = auc(scores[start:end], labels[start:end])
        if np.isnan(value):
            continue
        weight = float(end - start) if weighting == "impressions" else 1.0
        total += weight * value
        weight_sum += weight
    return total / weight_sum if weight_sum else float("nan")


def item_coverage(recommended: np.ndarray, n_items: int) -> float:
    """Share of the ``n_items`` candidates among ``recommended`` (any shape of indices)."""
    return len(np.unique(recommended)) / n_items if n_items else 0.0


def popularity_percentile(popularity: np.ndarray) -> np.ndarray:
    """(n_items,) percentile in [0, 1] of each item's training popularity (ties averaged)."""
    if len(popularity) == 1:
        return np.ones(1)
    return (rankdata(popularity) - 1) / (len(popularity) - 1)


def popularity_bias(recommended: np.ndarray, percentile: np.ndarray) -> float:
    """Mean popularity percentile over all recommended slots."""
    return float(percentile[recommended].mean()) if recommended.size else float("nan")


def activity_slices(activity: np.ndarray, n_train_users: int) -> tuple[np.ndarray, float]:
    """(slice label per user, light/heavy threshold) from training events per user.

    ``activity`` is indexed by user; users ``>= n_train_users`` are new by construction.
    """
    threshold = float(np.median(activity[:n_train_users])) if n_train_users else 0.0
    labels = np.where(activity > threshold, "heavy", "light").astype(object)
    labels[activity == 0] = "new"
    return labels, threshold


def relevant_dense(relevant: sp.csr_matrix, rows: np.ndarray) -> np.ndarray:
    """(len(rows), n_items) boolean relevance for a batch of target rows."""
    return relevant[rows].toarray() > 0
