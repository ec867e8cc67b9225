from __future__ import annotations

import math

import numpy as np
import pytest

from training.evaluation.metrics import (
    activity_slices,
    auc,
    gauc,
    item_coverage,
    popularity_bias,
    popularity_percentile,
    ranking_metrics,
    top_k,
)


def _relevant(n_items: int, *rows: list[int]) -> np.ndarray:
    out = np.zeros((len(rows), n_items), dtype=bool)
    for r, items in enumerate(rows):
        out[r, items] = True
    return out


def test_ndcg_recall_hit_by_hand() -> None:
    # Relevant {0, 2}; ranked 0, 1, 2: hits at ranks 1 and 3.
    metrics = ranking_metrics(np.array([[0, 1, 2]]), _relevant(5, [0, 2]), ks=(1, 2, 3))
    dcg3 = 1 + 1 / math.log2(4)
    ideal = 1 + 1 / math.log2(3)
    assert metrics["ndcg@3"][0] == pytest.approx(dcg3 / ideal)
    assert metrics["ndcg@1"][0] == pytest.approx(1.0)
    assert metrics["ndcg@2"][0] == pytest.approx(1 / ideal)
    assert metrics["recall@1"][0] == pytest.approx(0.5)
    assert metrics["recall@2"][0] == pytest.approx(0.5)
    assert metrics["recall@3"][0] == pytest.approx(1.0)
    assert metrics["hit@1"][0] == 1.0


def test_ideal_dcg_is_capped_at_k() -> None:
    # Three relevant items, K = 2, one hit at rank 2: ideal DCG@2 has only two gains.
    metrics = ranking_metrics(np.array([[3, 0]]), _relevant(4, [0, 1, 2]), ks=(1, 2))
    assert metrics["ndcg@2"][0] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert metrics["recall@2"][0] == pytest.approx(1 / 3)
    assert metrics["hit@1"][0] == 0.0
    assert metrics["hit@2"][0] == 1.0


def test_ranking_metrics_per_user_rows() -> None:
    metrics = ranking_metrics(np.array([[1, 0], [1, 0]]), _relevant(3, [0], [2]), ks=(2,))
    assert metrics["recall@2"].tolist() == [1.0, 0.0]
    assert metrics["ndcg@2"][0] == pytest.approx(1 / math.log2(3))


def test_users_without_relevant_items_are_refused() -> None:
    with pytest.raises(ValueError, match="relevant"):
        ranking_metrics(np.array([[0]]), np.zeros((1, 2), dtype=bool), ks=(1,))


def test_top_k_orders_by_score_then_lower_index() -> None:
    scores = np.array([[0.1, 0.9, 0.5, 0.9, -np.inf], [1.0, 1.0, 1.0, 1.0, 2.0]])
    assert top_k(scores, 3).tolist() == [[1, 3, 2], [4, 0, 1]]


def test_top_k_matches_a_stable_full_sort() -> None:
    rng = np.random.default_rng(7)
    scores = rng.integers(0, 5, size=(50, 40)).astype(float)  # many ties
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :7]
    assert (top_k(scores, 7) == expected).all()


def test_auc_by_hand() -> None:
    # Pairs (pos, neg): (0.35, 0.1) yes, (0.35, 0.4) no, (0.8, *) yes -> 3/4.
    assert auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert auc(np.array([1.0, 1.0]), np.array([1, 0])) == pytest.approx(0.5)
    assert math.isnan(auc(np.array([1.0, 2.0]), np.array([1, 1])))


def test_gauc_weights_users_by_impressions() -> None:
    groups = np.array(["a", "a", "a", "b", "b", "c"])
    scores = np.array([0.9, 0.1, 0.2, 0.1, 0.9, 0.5])
    labels = np.array([1, 0, 0, 1, 0, 1])
    # a: AUC 1 over 3 impressions; b: AUC 0 over 2; c: one class, skipped.
    assert gauc(groups, scores, labels) == pytest.approx(3 / 5)
    assert gauc(groups, scores, labels, weighting="uniform") == pytest.approx(0.5)
    # A pooled AUC would mix users and give a different number.
    assert auc(scores, labels) != pytest.approx(gauc(groups, scores, labels))


def test_coverage_and_popularity_bias() -> None:
    percentile = popularity_percentile(np.array([10, 5, 5, 1]))
    assert percentile.tolist() == pytest.approx([1.0, 0.5, 0.5, 0.0])
    recommended = np.array([[0, 1], [0, 3]])
    assert item_coverage(recommended, 4) == pytest.approx(0.75)
    assert popularity_bias(recommended, percentile) == pytest.approx((1 + 0.5 + 1 + 0) / 4)


def test_activity_slices_by_median_of_training_users() -> None:
    # Training users have 1, 2, 10, 20 events (median 6); user 4 is new.
    labels, threshold = activity_slices(np.array([1, 2, 10, 20, 0]), n_train_users=4)
    assert threshold == 6.0
    assert labels.tolist() == ["light", "light", "heavy", "heavy", "new"]
