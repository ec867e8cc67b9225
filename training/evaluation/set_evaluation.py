"""Static evaluation of a trained cascade, every model and feature frozen at the cutoff.

- LightGCN: full ranking (:func:`training.evaluation.evaluate.evaluate`) of the recall score
  (``models.cascade.recall_scores``): the item embeddings against the trained user vector
  blended with the user's recent items at the cutoff, plus the set's item prior when the
  config weights it; a user with neither vector (new since the cutoff) gets the recall
  stage's cold-start ranking, as in serving. ``lightgcn_embeddings`` is the same ranking
  from the embeddings alone (no item prior; live popularity for users without history),
  so the report can show what the prior adds.
- DIN: AUC and GAUC of its scores on each user's recall candidates, labelled by the
  target period.
- RankNet: NDCG@10 of its greedy order against DIN's order of the same shortlists, per
  user, with a Wilcoxon signed-rank test and a paired t-test.
- The cascade: ``models.cascade.recommend`` at k=10 per user, full-ranking metrics at 10.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from scipy import stats

from models.cascade import CascadeConfig, CascadeModels, recall_scores, recommend
from models.ranknet import greedy_rerank
from training.data.examples import FrozenState
from training.data.split import TimeSplit
from training.evaluation.evaluate import Scorer, evaluate
from training.evaluation.lists import candidate_lists, request_for
from training.evaluation.metrics import auc, gauc

RECALL_KS = (10, 20, 50, 100, 200)


def _trained_users(split: TimeSplit) -> np.ndarray:
    return np.arange(split.n_users) < split.n_train_users


def lightgcn_scorer(
    models: CascadeModels, state: FrozenState, split: TimeSplit, config: CascadeConfig
) -> Scorer:
    if models.item_embeddings is None:
        raise ValueError("LightGCN evaluation needs item embeddings")
    trained = _trained_users(split)

    def score(users: np.ndarray) -> np.ndarray:
        rows = []
        for user in users:
            request = request_for(state, int(user), split.train_matrix, bool(trained[user]))
            vector, _, _ = recall_scores(models, state.items, request, config)
            rows.append(vector.numpy().astype(np.float64))
        return np.stack(rows)

    return score


def cascade_scorer(
    models: CascadeModels, state: FrozenState, split: TimeSplit, config: CascadeConfig, k: int
) -> Scorer:
    trained = _trained_users(split)

    def score(users: np.ndarray) -> np.ndarray:
        out = np.full((len(users), split.n_items), -np.inf)
        for row, user in enumerate(users):
            request = request_for(state, int(user), split.train_matrix, bool(trained[user]), k)
            result = recommend(models, state.items, request, config)
            out[row, result.items.numpy()] = np.arange(k, k - result.items.numel(), -1)
        return out

    return score


def _ndcg_at(
    ranked: np.ndarray, relevant: np.ndarray, n_relevant: np.ndarray, k: int
) -> np.ndarray:
    """(B,) NDCG@k of ranked item lists (B, >=k) against (B, n_items) bool relevance."""
    hits = np.take_along_axis(relevant, ranked[:, :k], axis=1).astype(np.float64)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits * discounts).sum(1)
    ideal = np.array([discounts[: min(int(n), k)].sum() for n in n_relevant])
    return np.divide(dcg, ideal, out=np.zeros_like(dcg), where=ideal > 0)


def _paired(differences: np.ndarray) -> dict[str, Any]:
    nonzero = differences[differences != 0]
    out: dict[str, Any] = {"n_users": int(len(differences)), "n_nonzero": int(len(nonzero))}
    if len(nonzero) >= 2:
        wilcoxon = stats.wilcoxon(nonzero, alternative="two-sided")
        out["wilcoxon_statistic"] = float(wilcoxon.statistic)
        out["wilcoxon_p"] = float(wilcoxon.pvalue)
        ttest = stats.ttest_1samp(differences, 0.0)
        out["ttest_statistic"] = float(ttest.statistic)
        out["ttest_p"] = float(ttest.pvalue)
    return out


def rank_stage_metrics(
    models: CascadeModels,
    state: FrozenState,
    split: TimeSplit,
    config: CascadeConfig,
    target: str,
    k: int = 10,
) -> dict[str, Any]:
    """DIN AUC/GAUC on recall candidates and RankNet's NDCG@k change over DIN's order."""
    goal = split.target(target)
    lists = candidate_lists(
        models, state, goal.users, split.train_matrix, _trained_users(split), config
    )
    relevant = goal.relevant.toarray() > 0  # (B, n_items)
    groups, scores, labels = [], [], []
    for row, (candidates, logits) in enumerate(
        zip(lists.candidates, lists.din_scores, strict=True)
    ):
        groups.append(np.full(candidates.numel(), row))
        scores.append(logits.numpy())
        labels.append(relevant[row, candidates.numpy()])
    group, score, label = np.concatenate(groups), np.concatenate(scores), np.concatenate(labels)
    din = {
        "auc": auc(score, label),
        "gauc": gauc(group, score, label, weighting="impressions"),
        "gauc_uniform": gauc(group, score, label, weighting="uniform"),
        "candidates_per_user": float(len(score) / max(len(lists.candidates), 1)),
        "positive_rate": float(label.mean()) if len(label) else None,
    }
    result: dict[str, Any] = {"din": din}
    if models.ranknet is None:
        return result
    ranknet = models.ranknet
    din_order = lists.shortlist.numpy()
    reranked = np.zeros((len(goal.users), k), dtype=np.int64)
    with torch.inference_mode():
        for row in range(len(goal.users)):
            m = int(lists.mask[row].sum())
            placed, _ = greedy_rerank(
                ranknet, lists.features[row, :m], lists.vectors[row, :m], min(k, m)
            )
            reranked[row, : placed.numel()] = lists.shortlist[row, placed].numpy()
    n_relevant = relevant.sum(1)
    before = _ndcg_at(din_order, relevant, n_relevant, k)
    after = _ndcg_at(reranked, relevant, n_relevant, k)
    result["ranknet"] = {
        f"din_ndcg@{k}": float(before.mean()),
        f"ranknet_ndcg@{k}": float(after.mean()),
        f"delta_ndcg@{k}": float((after - before).mean()),
        **_paired(after - before),
    }
    return result


def evaluate_frozen(
    models: CascadeModels,
    config: CascadeConfig,
    split: TimeSplit,
    state: FrozenState,
    target: str = "test",
) -> dict[str, Any]:
    """Every stage's metrics on ``target`` (a JSON-able dict)."""
    if state.at_ms != split.train_end_ms:
        raise ValueError("the static evaluation needs features frozen at the training cutoff")
    lightgcn = evaluate(lightgcn_scorer(models, state, split, config), split, RECALL_KS, target)
    embeddings_only = evaluate(
        lightgcn_scorer(
            dataclasses.replace(models, item_prior=None),
            state,
            split,
            dataclasses.replace(config, prior_weight=0.0),
        ),
        split,
        RECALL_KS,
        target,
    )
    cascade = evaluate(cascade_scorer(models, state, split, config, 10), split, (10,), target)
    return {
        "target": target,
        "features_frozen_at_ms": state.at_ms,
        "lightgcn": lightgcn,
        "lightgcn_embeddings": embeddings_only,
        **rank_stage_metrics(models, state, split, config, target),
        "cascade": cascade,
    }
