"""The item-kNN scorer shared by the API's baseline and the prequential harness."""

from __future__ import annotations

import numpy as np
import pytest

from serving.knn import (
    FoldedCooccurrence,
    KnnParams,
    SparseCooccurrence,
    category_incidence,
    cosine_rows,
    knn_contributions,
    knn_scores,
    recommend,
    recommend_grid,
    top_k,
)

# users: u0 a,b ; u1 a,c ; u2 b ; u3 c   (items a=0, b=1, c=2)
PAIRS = [(0, 0), (0, 1), (1, 0), (1, 2), (2, 1), (3, 2)]


def dense() -> FoldedCooccurrence:
    counts = FoldedCooccurrence(3)
    seen: dict[int, list[int]] = {}
    for user, item in PAIRS:
        before = seen.setdefault(user, [])
        counts.add(before, item)
        before.append(item)
    return counts


def sparse() -> SparseCooccurrence:
    users, items = zip(*PAIRS, strict=True)
    return SparseCooccurrence(np.array(users), np.array(items), 3)


def test_the_folded_and_the_built_counts_agree() -> None:
    d, s = dense(), sparse()
    assert d.users_per_item.tolist() == s.users_per_item.tolist() == [2, 2, 2]
    assert d.rows([0, 1, 2]).toarray().tolist() == s.rows([0, 1, 2]).toarray().tolist()
    params = KnnParams(history=2, decay=0.5)
    assert knn_scores(d, [1, 0], params).tolist() == knn_scores(s, [1, 0], params).tolist()  # type: ignore[union-attr]


def test_scores_are_cosine_weighted_by_position() -> None:
    scores = knn_scores(sparse(), [1, 0], KnnParams(history=2, decay=0.5))
    # b (weight 1): cos(b, a) = 1/2; a (weight 0.5): cos(a, b) = cos(a, c) = 1/2.
    assert scores is not None
    assert scores.tolist() == pytest.approx([0.5, 0.25, 0.25])
    assert knn_scores(sparse(), [], KnnParams()) is None


def test_a_user_without_history_gets_the_popular_items() -> None:
    picks = recommend(sparse(), [], np.array([1.0, 5.0, 3.0]), [], 2, KnnParams())
    assert [(p.index, p.because) for p in picks] == [(1, None), (2, None)]


def test_shared_categories_weigh_more_and_name_the_reason() -> None:
    # The user's newest item is c (sci-fi), then b (horror); a is horror, neighbours of both.
    counts = SparseCooccurrence(
        np.array([0, 0, 0, 1, 1, 1]), np.array([0, 1, 3, 0, 2, 3]), 4
    )  # a, d co-occur with b and with c alike
    categories = category_incidence([["horror"], ["horror"], ["sci-fi"], ["comedy"]])
    plain = recommend(counts, [2, 1], np.zeros(4), [1, 2], 2, KnnParams(decay=0.9))
    assert [p.because for p in plain] == [2, 2]  # c is newer: it names both
    weighted = recommend(
        counts, [2, 1], np.zeros(4), [1, 2], 2, KnnParams(decay=0.9, same_category=1.0), categories
    )
    assert [(p.index, p.because) for p in weighted] == [(0, 1), (3, 2)]


@pytest.mark.parametrize("seed", range(10))
def test_the_sparse_contributions_equal_the_dense_definition(seed: int) -> None:
    """decay**position x cosine over every (recent item, item) pair, times 1 +
    same_category where they share a category: computed densely here, only over the
    co-occurring pairs by the scorer."""
    rng = np.random.default_rng(seed)
    n_items = 30
    users = rng.integers(0, 25, 200)
    items = rng.zipf(1.4, 200) % n_items
    counts = SparseCooccurrence(users, items, n_items)
    categories = category_incidence(
        [
            [f"c{c}" for c in rng.choice(5, size=int(rng.integers(0, 3)), replace=False)]
            for _ in range(n_items)
        ]
    )
    recent = [int(i) for i in rng.choice(n_items, size=8, replace=False)]
    params = KnnParams(history=6, decay=0.8, same_category=float(rng.choice([0.0, 0.5, 1.0])))
    got = knn_contributions(counts, recent, params, categories)
    assert got is not None
    voters = recent[: params.history]
    rows = counts.rows(voters).toarray().astype(np.float64)
    norms = np.sqrt(counts.users_per_item)
    denominator = np.outer(norms[voters], norms)
    cosine = np.divide(rows, denominator, out=np.zeros_like(rows), where=denominator > 0)
    shared = (categories[voters] @ categories.T).toarray() > 0
    expected = (params.decay ** np.arange(len(voters)))[:, None] * cosine
    expected *= 1.0 + params.same_category * shared
    assert got.shape == (len(voters), n_items)
    assert got.toarray() == pytest.approx(expected, rel=1e-12, abs=0)
    assert (expected > 0).sum() > 10  # the case is not empty


def test_a_held_cosine_of_a_longer_history_gives_the_same_picks() -> None:
    """The harness computes a user's cosine rows once per event for all its kNN arms; each
    arm reads the beginning it votes with and picks as if it had computed its own."""
    rng = np.random.default_rng(3)
    counts = SparseCooccurrence(rng.integers(0, 30, 300), rng.zipf(1.3, 300) % 40, 40)
    recent = [int(i) for i in rng.choice(40, size=12, replace=False)]
    held = cosine_rows(counts, recent)
    popularity = counts.users_per_item
    for history in (1, 5, 12, 50):
        for decay in (0.6, 1.0):
            params = KnnParams(history=history, decay=decay)
            alone = recommend(counts, recent, popularity, recent[:3], 10, params)
            shared = recommend(counts, recent, popularity, recent[:3], 10, params, cosine=held)
            assert shared == alone and len(alone) == 10
    assert held.shape == (12, 40)  # not changed by the arms that read it


@pytest.mark.parametrize("seed", range(6))
def test_the_grid_picks_what_each_kNN_of_it_picks(seed: int) -> None:
    """The validation's kNN grid answered from one product: the picks of ``recommend`` per
    parameters, ties included (small counts tie often), held cosine or not."""
    rng = np.random.default_rng(seed)
    counts = SparseCooccurrence(rng.integers(0, 60, 900), rng.zipf(1.3, 900) % 80, 80)
    recent = [int(i) for i in rng.choice(80, size=int(rng.integers(1, 30)), replace=False)]
    popularity = np.floor(counts.users_per_item / 3)  # a tiebreak with ties of its own
    grid = [KnnParams(h, d) for h in (1, 5, 20, 50) for d in (0.6, 0.9, 1.0)]
    exclude = recent[:4]
    want = [
        [pick.index for pick in recommend(counts, recent, popularity, exclude, 10, params)]
        for params in grid
    ]
    assert recommend_grid(counts, recent, popularity, exclude, 10, grid) == want
    held = cosine_rows(counts, recent)
    assert recommend_grid(counts, recent, popularity, exclude, 10, grid, held) == want
    assert len({tuple(w) for w in want}) > 1  # the parameters do pick differently


def test_the_grid_without_history_falls_back_to_popularity_and_refuses_category_votes() -> None:
    counts = sparse()
    popularity = np.array([1.0, 3.0, 2.0])
    grid = [KnnParams(5, 0.9), KnnParams(20, 1.0)]
    assert recommend_grid(counts, [], popularity, [1], 2, grid) == [[2, 0], [2, 0]]
    with pytest.raises(ValueError, match="same_category"):
        recommend_grid(counts, [0], popularity, [], 2, [KnnParams(5, 0.9, same_category=1.0)])


def _sorted_top_k(
    scores: np.ndarray, tiebreak: np.ndarray, exclude: list[int], k: int
) -> list[int]:
    """The definition: a full stable sort by (-score, -tiebreak), excluded and -inf out."""
    scores = scores.astype(np.float64, copy=True)
    scores[exclude] = -np.inf
    order = np.lexsort((-tiebreak, -scores))
    return [int(i) for i in order[np.isfinite(scores[order])][:k]]


@pytest.mark.parametrize("seed", range(40))
def test_top_k_equals_a_full_sort_with_ties_everywhere(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    # Few distinct values: most scores tie (as the kNN's zeros do), and tiebreaks tie too.
    scores = rng.integers(0, 4, n).astype(np.float64) * rng.choice([1.0, 0.5])
    scores[rng.random(n) < 0.1] = -np.inf
    tiebreak = rng.integers(0, 3, n).astype(np.float64)
    exclude = [int(i) for i in rng.choice(n, size=int(rng.integers(0, n + 1)), replace=False)]
    for k in (1, 3, 10, n, n + 5):
        assert top_k(scores, tiebreak, exclude, k) == _sorted_top_k(scores, tiebreak, exclude, k)


def test_the_folded_counts_equal_the_built_ones_across_merges() -> None:
    """Many users' first touches folded one at a time, read between folds, with merges into
    the sparse matrix every few pairs: always the counts built from the pairs at once."""
    rng = np.random.default_rng(0)
    users = rng.integers(0, 40, 600)
    items = rng.zipf(1.5, 600) % 25
    folded = FoldedCooccurrence(25, merge_at=16)
    seen: dict[int, list[int]] = {}
    for step, (user, item) in enumerate(zip(users.tolist(), items.tolist(), strict=True)):
        before = seen.setdefault(user, [])
        if item in before:
            continue  # a first touch only, as the harness folds it
        folded.add(before, item)
        before.append(item)
        if step % 50 == 0 or step == len(users) - 1:
            pairs = np.array([(u, i) for u, touched in seen.items() for i in touched])
            built = SparseCooccurrence(pairs[:, 0], pairs[:, 1], 25)
            assert folded.users_per_item.tolist() == built.users_per_item.tolist()
            assert (folded.rows(range(25)).toarray() == built.rows(range(25)).toarray()).all()
            assert (folded.rows([3, 0, 3]).toarray() == built.rows([3, 0, 3]).toarray()).all()
    assert folded.counts.nnz > 0  # some pairs went into the matrix
