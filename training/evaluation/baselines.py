"""Non-neural and classic baselines, all trained on the training period of a split only.

Each ``*_scorer`` returns a :data:`training.evaluation.evaluate.Scorer`. Scores may tie; the
evaluation breaks ties toward the more popular training item, so a baseline with no
signal for a user (a new user for ItemKNN, an item outside the recent window) falls back
to all-time popularity by construction rather than to arbitrary index order.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from training.data.split import TimeSplit
from training.evaluation.evaluate import Scorer, evaluate

RECENT_DAYS = (1, 3, 7, 14)
KNN_NEIGHBOURS = (20, 50, 100, 200)  # chosen on validation NDCG@10

DAY_MS = 86_400_000


def broadcast(item_scores: np.ndarray) -> Scorer:
    def score(users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(item_scores, (len(users), len(item_scores)))

    return score


def popularity_scores(split: TimeSplit) -> np.ndarray:
    """(n_items,) distinct training users per item."""
    return split.item_popularity.astype(np.float64)


def popularity_scorer(split: TimeSplit) -> Scorer:
    """The same list for everyone: the items most users interacted with in training."""
    return broadcast(popularity_scores(split))


def recent_distinct_users(
    users: np.ndarray, items: np.ndarray, times: np.ndarray, end_ms: int, days: float, n_items: int
) -> np.ndarray:
    """(n_items,) distinct users per item among the events in ``[end_ms - days, end_ms)``."""
    recent = (times >= end_ms - int(days * DAY_MS)) & (times < end_ms)
    pairs = np.unique(np.stack([users[recent], items[recent]], axis=1), axis=0)
    return np.bincount(pairs[:, 1], minlength=n_items).astype(np.float64)


def recent_popularity_scores(split: TimeSplit, days: float) -> np.ndarray:
    """(n_items,) distinct users per item in the last ``days`` before the training cutoff."""
    return recent_distinct_users(
        split.train_user,
        split.train_item,
        split.train_time,
        split.train_end_ms,
        days,
        split.n_items,
    )


def recent_popularity_scorer(split: TimeSplit, days: float) -> Scorer:
    """Popularity over a short window that ends at the cutoff; what is trending now."""
    return broadcast(recent_popularity_scores(split, days))


def item_similarity(split: TimeSplit, neighbours: int = 100) -> sp.csr_matrix:
    """(n_items, n_items) cosine similarity over training users, top ``neighbours`` per row.

    Row j holds j's most similar items; the diagonal is zero.
    """
    interactions = split.train_matrix[: split.n_train_users].astype(np.float64)
    co = (interactions.T @ interactions).tocsr()
    norms = np.sqrt(co.diagonal())
    inverse = sp.diags(np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0))
    similarity = (inverse @ co @ inverse).tocsr()
    similarity.setdiag(0.0)
    similarity.eliminate_zeros()
    return _keep_top_per_row(similarity, neighbours)


def _keep_top_per_row(matrix: sp.csr_matrix, n: int) -> sp.csr_matrix:
    data = matrix.data.copy()
    for row in range(matrix.shape[0]):
        start, end = matrix.indptr[row], matrix.indptr[row + 1]
        if end - start > n:
            row_data = data[start:end]
            # Stable order, ties to the lower column index, so pruning is deterministic.
            order = np.lexsort((matrix.indices[start:end], -row_data))
            row_data[order[n:]] = 0.0
    pruned = sp.csr_matrix((data, matrix.indices.copy(), matrix.indptr.copy()), matrix.shape)
    pruned.eliminate_zeros()
    return pruned


def item_knn_scorer(split: TimeSplit, neighbours: int = 100) -> Scorer:
    """Score(u, j) = sum of similarities between j and u's training items among j's
    ``neighbours`` most similar items."""
    similarity_t = item_similarity(split, neighbours).T.tocsr()

    def score(users: np.ndarray) -> np.ndarray:
        return (split.train_matrix[users].astype(np.float64) @ similarity_t).toarray()

    return score


@dataclass(frozen=True)
class BPRConfig:
    dim: int = 64  # embedding size; ML-100K has ~1.6k items, larger adds little
    learning_rate: float = 0.005  # lazy Adam: the rows a batch touches
    weight_decay: float = 1e-4  # L2 on the embeddings touched by each batch
    batch_size: int = 2048
    max_epochs: int = 60
    patience: int = 5  # epochs without a better validation NDCG@10 before stopping
    init_std: float = 0.1


@dataclass
class BPRModel:
    """Matrix factorisation with an item bias: score(u, i) = p_u · q_i + b_i.

    Users without an embedding (new users) score by the item bias alone.
    """

    user_factors: np.ndarray  # (n_train_users, D)
    item_factors: np.ndarray  # (n_items, D)
    item_bias: np.ndarray  # (n_items,)
    history: list[dict[str, float]] = field(default_factory=list)

    def score(self, users: np.ndarray) -> np.ndarray:
        known = users < len(self.user_factors)
        factors = np.zeros((len(users), self.item_factors.shape[1]), np.float32)
        factors[known] = self.user_factors[users[known]]
        return factors @ self.item_factors.T + self.item_bias  # (B, n_items)


class _LazyAdam:
    """Adam over dense numpy arrays, each step updating only the rows its gradient has
    (the lazy Adam of TensorFlow Addons, torch's ``SparseAdam``): a BPR batch touches a
    few thousand of the users' and items' rows, and updating every row's moments (dense
    Adam) was most of an epoch at 1M events (63 of 108 s; 47k items, 56k users)."""

    def __init__(self, params: list[np.ndarray], learning_rate: float) -> None:
        self.params = params
        self.learning_rate = learning_rate
        self.first = [np.zeros_like(p) for p in params]
        self.second = [np.zeros_like(p) for p in params]
        self.steps = 0

    def step(
        self, grads: list[tuple[np.ndarray, np.ndarray]], beta1: float = 0.9, beta2: float = 0.999
    ) -> None:
        """``grads``: per parameter, its distinct touched rows and their gradients."""
        self.steps += 1
        scale = self.learning_rate * np.sqrt(1 - beta2**self.steps) / (1 - beta1**self.steps)
        for param, (rows, grad), first, second in zip(
            self.params, grads, self.first, self.second, strict=True
        ):
            moment = first[rows] * beta1 + (1 - beta1) * grad
            spread = second[rows] * beta2 + (1 - beta2) * grad * grad
            first[rows], second[rows] = moment, spread
            param[rows] -= scale * moment / (np.sqrt(spread) + 1e-8)


def _row_sums(indices: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct ``indices`` and the sum of ``values`` (rows aligned with indices) of
    each: a sparse gradient, one row per touched parameter row."""
    rows, inverse = np.unique(indices, return_inverse=True)
    sums = np.zeros((len(rows), *values.shape[1:]), values.dtype)
    np.add.at(sums, inverse, values)
    return rows, sums


def _bpr_gradients(
    model: BPRModel,
    users: np.ndarray,
    positives: np.ndarray,
    negatives: np.ndarray,
    weight_decay: float,
) -> tuple[float, list[tuple[np.ndarray, np.ndarray]]]:
    """Loss and gradients (user, item, bias) of one minibatch of BPR:
    mean -log sigmoid(x_ui - x_uj) + weight_decay * L2 of the touched rows / batch.
    Each gradient as its distinct touched rows and their values (0 elsewhere)."""
    p = model.user_factors[users]  # (B, D)
    q_pos, q_neg = model.item_factors[positives], model.item_factors[negatives]  # (B, D)
    margin = (p * (q_pos - q_neg)).sum(axis=1) + (
        model.item_bias[positives] - model.item_bias[negatives]
    )  # (B,)
    n = len(users)
    penalty = (p * p).sum() + (q_pos * q_pos).sum() + (q_neg * q_neg).sum()
    loss = float(np.logaddexp(0.0, -margin).mean() + weight_decay * penalty / n)
    # d loss / d margin = -sigmoid(-margin) / n
    slope = (-0.5 * (1 - np.tanh(margin / 2)) / n)[:, None].astype(p.dtype)  # (B, 1)
    decay = 2 * weight_decay / n
    items = np.concatenate([positives, negatives])  # (2B,)
    return loss, [
        _row_sums(users, slope * (q_pos - q_neg) + decay * p),
        _row_sums(items, np.concatenate([slope * p + decay * q_pos, -slope * p + decay * q_neg])),
        _row_sums(items, np.concatenate([slope[:, 0], -slope[:, 0]])),
    ]


def _sample_negatives(
    rng: np.random.Generator, users: np.ndarray, positive_keys: np.ndarray, n_items: int
) -> np.ndarray:
    """Uniform candidates that are not the user's training items (a few redraws)."""
    negatives = rng.integers(0, n_items, len(users))
    for _ in range(10):
        keys = users * n_items + negatives
        clash = np.isin(keys, positive_keys, assume_unique=False)
        if not clash.any():
            break
        negatives[clash] = rng.integers(0, n_items, int(clash.sum()))
    return negatives


def train_bpr(split: TimeSplit, config: BPRConfig | None = None, seed: int = 0) -> BPRModel:
    """BPR-MF on distinct training (user, item) pairs; keeps the epoch with the best
    validation NDCG@10 and stops after ``patience`` epochs without improvement. Without
    validation users it trains ``max_epochs`` epochs."""
    config = config or BPRConfig()
    rng = np.random.default_rng(seed)
    coo = split.train_matrix[: split.n_train_users].tocoo()
    users, items = coo.row.astype(np.int64), coo.col.astype(np.int64)
    positive_keys = np.sort(users * split.n_items + items)
    model = BPRModel(
        user_factors=(
            rng.standard_normal((split.n_train_users, config.dim)) * config.init_std
        ).astype(np.float32),
        item_factors=(rng.standard_normal((split.n_items, config.dim)) * config.init_std).astype(
            np.float32
        ),
        item_bias=np.zeros(split.n_items, np.float32),
    )
    optimiser = _LazyAdam(
        [model.user_factors, model.item_factors, model.item_bias], config.learning_rate
    )
    has_validation = len(split.validation.users) > 0

    best_ndcg, best, stale = -1.0, copy.deepcopy(model), 0
    history: list[dict[str, float]] = []
    for epoch in range(config.max_epochs):
        order = rng.permutation(len(users))
        negatives = _sample_negatives(rng, users[order], positive_keys, split.n_items)
        total = 0.0
        for start in range(0, len(order), config.batch_size):
            batch = order[start : start + config.batch_size]
            loss, grads = _bpr_gradients(
                model,
                users[batch],
                items[batch],
                negatives[start : start + config.batch_size],
                config.weight_decay,
            )
            optimiser.step(grads)
            total += loss * len(batch)
        record = {"epoch": float(epoch + 1), "loss": total / len(order)}
        if has_validation:
            ndcg = evaluate(model.score, split, ks=(10,), target="validation")["ndcg@10"]
            record["validation_ndcg@10"] = ndcg
            if ndcg > best_ndcg:
                best_ndcg, best, stale = ndcg, copy.deepcopy(model), 0
            else:
                stale += 1
        history.append(record)
        if has_validation and stale >= config.patience:
            break
    if has_validation:
        model = best
    model.history = history
    return model


def bpr_scorer(split: TimeSplit, config: BPRConfig | None = None, seed: int = 0) -> Scorer:
    return train_bpr(split, config, seed).score


def non_learned_scorers(split: TimeSplit, knn_neighbours: int) -> dict[str, Scorer]:
    """All-time and recent popularity, and item-kNN: the baselines every report carries."""
    scorers = {"popularity (all training)": popularity_scorer(split)}
    for days in RECENT_DAYS:
        scorers[f"recent popularity {days}d"] = recent_popularity_scorer(split, days)
    scorers[f"ItemKNN (N={knn_neighbours})"] = item_knn_scorer(split, knn_neighbours)
    return scorers


def choose_knn_neighbours(split: TimeSplit) -> int:
    scores = {
        n: evaluate(item_knn_scorer(split, n), split, ks=(10,), target="validation")["ndcg@10"]
        for n in KNN_NEIGHBOURS
    }
    return max(scores, key=lambda n: (scores[n], -n))
