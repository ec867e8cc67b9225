from __future__ import annotations

import numpy as np
import pytest

from tests.unit.training.helpers import events, planted_groups
from training.data.split import SplitConfig, time_split
from training.evaluation.baselines import (
    BPRConfig,
    BPRModel,
    _bpr_gradients,
    _LazyAdam,
    item_knn_scorer,
    item_similarity,
    popularity_scorer,
    recent_popularity_scores,
    train_bpr,
)
from training.evaluation.evaluate import evaluate

# Small and quick; the planted pattern needs little capacity.
SMALL_BPR = BPRConfig(dim=8, learning_rate=0.05, batch_size=64, max_epochs=40, patience=5)


def _planted_split():
    log = planted_groups()
    n_train = len(log) - 40  # two groups x ten users x (validation + test)
    # Half an event above each boundary, so float rounding cannot move it.
    fractions = SplitConfig((n_train + 0.5) / len(log), 20 / len(log))
    return time_split(log, fractions)


def test_planted_split_has_the_intended_periods() -> None:
    split = _planted_split()
    assert len(split.train_user) == 80
    assert len(split.validation.users) == 20
    assert len(split.test.users) == 20


def test_recent_popularity_counts_distinct_users_inside_the_window_only() -> None:
    rows = [(day * 0.1, f"old{day}", "classic") for day in range(5)]  # days 0-0.4
    rows += [(6.9, "a", "stale"), (7, "b", "trend"), (8, "c", "trend"), (9, "c", "trend")]
    rows += [(10, "x", "classic"), (10, "y", "trend")]  # test period starts at day 10
    split = time_split(events(rows), SplitConfig(9 / 11, 0.0))
    assert split.train_end_ms - split.train_time.min() == 10 * 86_400_000
    index = split.item_index
    recent = recent_popularity_scores(split, days=3)  # window [day 7, day 10)
    assert recent[index["trend"]] == 2  # b at exactly day 7 counts; c twice counts once
    assert recent[index["stale"]] == 0  # 0.1 day before the window
    assert recent[index["classic"]] == 0
    wide = recent_popularity_scores(split, days=30)
    assert wide[index["classic"]] == 5
    assert wide[index["stale"]] == 1
    # All-time popularity ranks the classic first; the 3-day window ranks the trend first.
    assert split.item_ids[0] == "classic"
    assert np.argmax(recent) == index["trend"]


def test_item_knn_cosine_by_hand_and_planted_co_occurrence() -> None:
    rows = [(u, f"u{u}", "a") for u in range(4)] + [(u + 0.5, f"u{u}", "b") for u in range(4)]
    rows += [(5, "u5", "c"), (5.5, "u5", "d"), (6, "u6", "c"), (7, "u7", "a")]
    rows += [(8, "u7", "b"), (8, "u5", "a"), (8, "u6", "d")]  # test period
    split = time_split(events(rows), SplitConfig(12 / 15, 0.0))
    a, b, c, d = (split.item_index[i] for i in "abcd")
    similarity = item_similarity(split, neighbours=10).toarray()
    # a: users u0-u3 and u7 (5); b: u0-u3 (4); 4 shared -> 4 / sqrt(20).
    assert similarity[a, b] == pytest.approx(4 / np.sqrt(20))
    assert similarity[c, d] == pytest.approx(1 / np.sqrt(2))
    assert similarity[a, c] == 0
    assert np.diag(similarity).sum() == 0
    scores = item_knn_scorer(split, neighbours=10)(np.array([split.user_index["u7"]]))
    # u7 holds a: b (co-occurs with a) outranks c and d (never with a).
    assert scores[0, b] > 0
    assert scores[0, c] == scores[0, d] == 0
    result = evaluate(item_knn_scorer(split), split, ks=(1,))
    assert result["slices"]["light"]["n_users"] + result["slices"]["heavy"]["n_users"] == 3


def test_item_knn_keeps_only_the_top_neighbours() -> None:
    rows = [(0, "u0", "a"), (0, "u0", "b"), (1, "u1", "a"), (1, "u1", "b"), (2, "u2", "a")]
    rows += [(2, "u2", "c"), (3, "u3", "z")]
    split = time_split(events(rows), SplitConfig(6 / 7, 0.0))
    a, b, c = (split.item_index[i] for i in "abc")
    full = item_similarity(split, neighbours=10).toarray()
    pruned = item_similarity(split, neighbours=1).toarray()
    assert full[a, c] > 0 and full[a, b] > full[a, c]
    assert pruned[a, b] == pytest.approx(full[a, b])
    assert pruned[a, c] == 0


def test_bpr_learns_the_planted_groups() -> None:
    split = _planted_split()
    model = train_bpr(split, SMALL_BPR, seed=0)
    losses = [h["loss"] for h in model.history]
    assert losses[-1] < losses[0]
    bpr = evaluate(model.score, split, ks=(2,))
    popularity = evaluate(popularity_scorer(split), split, ks=(2,))
    # Eight candidates are left per user: the two held-out items of their own group (the
    # validation one and the relevant test one) and the other group's six. Only a model
    # that learned the groups puts the test item in the top two.
    print(bpr["recall@2"], popularity["recall@2"])
    assert bpr["recall@2"] >= 0.9
    assert popularity["recall@2"] <= 0.6
    # Early stopping keeps the best validation epoch.
    best = max(h["validation_ndcg@10"] for h in model.history)
    assert evaluate(model.score, split, ks=(10,), target="validation")["ndcg@10"] == (
        pytest.approx(best)
    )


def test_bpr_is_deterministic_for_a_seed() -> None:
    split = _planted_split()
    config = BPRConfig(dim=8, learning_rate=0.05, batch_size=64, max_epochs=3, patience=5)
    users = np.arange(split.n_users)
    first = train_bpr(split, config, seed=3).score(users)
    again = train_bpr(split, config, seed=3).score(users)
    other = train_bpr(split, config, seed=4).score(users)
    assert np.array_equal(first, again)
    assert not np.allclose(first, other)


def test_bpr_scores_new_users_by_item_bias() -> None:
    split = _planted_split()
    model = train_bpr(split, BPRConfig(dim=4, max_epochs=1), seed=0)
    new_user = np.array([split.n_train_users + 5])
    assert np.allclose(model.score(new_user)[0], model.item_bias)


def test_bpr_gradients_match_finite_differences() -> None:
    rng = np.random.default_rng(0)
    model = BPRModel(
        user_factors=rng.standard_normal((3, 4)),
        item_factors=rng.standard_normal((5, 4)),
        item_bias=rng.standard_normal(5),
    )
    users, positives, negatives = np.array([0, 1, 0]), np.array([1, 2, 3]), np.array([4, 1, 1])
    _, grads = _bpr_gradients(model, users, positives, negatives, weight_decay=0.1)
    params = [model.user_factors, model.item_factors, model.item_bias]
    for param, (rows, values) in zip(params, grads, strict=True):
        assert len(np.unique(rows)) == len(rows)  # one row per touched parameter row
        grad = np.zeros_like(param)
        grad[rows] = values
        numeric = np.zeros_like(param)
        for index in np.ndindex(param.shape):
            original = param[index]
            param[index] = original + 1e-6
            up, _ = _bpr_gradients(model, users, positives, negatives, 0.1)
            param[index] = original - 1e-6
            down, _ = _bpr_gradients(model, users, positives, negatives, 0.1)
            param[index] = original
            numeric[index] = (up - down) / 2e-6
        assert np.allclose(grad, numeric, atol=1e-5)


def test_the_lazy_step_moves_only_the_touched_rows_as_adam_moves_them() -> None:
    rng = np.random.default_rng(1)
    param = rng.standard_normal((6, 3))
    start = param.copy()
    optimiser = _LazyAdam([param], learning_rate=0.1)
    first_grad = rng.standard_normal((2, 3))
    optimiser.step([(np.array([1, 4]), first_grad)])
    # Adam's first step moves each touched entry by the learning rate against its sign.
    assert np.allclose(param[[1, 4]], start[[1, 4]] - 0.1 * np.sign(first_grad), atol=1e-5)
    assert np.array_equal(np.delete(param, [1, 4], axis=0), np.delete(start, [1, 4], axis=0))
    second_grad = rng.standard_normal((1, 3))
    before = param.copy()
    optimiser.step([(np.array([4]), second_grad)])
    # Row 4's moments carry its first gradient; row 1 was not touched and stays.
    first = 0.9 * 0.1 * first_grad[1] + 0.1 * second_grad[0]
    second = 0.999 * 0.001 * first_grad[1] ** 2 + 0.001 * second_grad[0] ** 2
    scale = 0.1 * np.sqrt(1 - 0.999**2) / (1 - 0.9**2)
    assert np.allclose(param[4], before[4] - scale * first / (np.sqrt(second) + 1e-8))
    assert np.array_equal(param[1], before[1])
