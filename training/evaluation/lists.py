"""Candidate lists through the serving cascade's own functions, at one frozen instant.

RankNet is trained on lists built at the start of the held-out tail of the training
period and evaluated on lists built at the training cutoff; both go through
:func:`models.cascade.recall`, :func:`models.cascade.din_context` and
:func:`models.cascade.rank`, the functions ``recommend`` calls, so the features RankNet
learns from are the ones it is served.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from models.cascade import (
    CascadeConfig,
    CascadeModels,
    CascadeRequest,
    din_context,
    rank,
    recall,
)
from models.ranknet import rerank_features, similarity_to_above
from training.data.examples import FrozenState


def request_for(
    state: FrozenState, user: int, seen: sp.csr_matrix, trained_user: bool, k: int = 10
) -> CascadeRequest:
    """The request the API would build for ``user`` at the frozen instant."""
    row = seen.indices[seen.indptr[user] : seen.indptr[user + 1]]
    return CascadeRequest(
        recent_items=state.recent_items[user],
        seen_items=torch.from_numpy(row.astype(np.int64)),
        user_index=user if trained_user else None,
        user_context=state.user_context[user],
        k=k,
    )


@dataclass
class CandidateLists:
    """Per user: recall candidates with DIN scores, and DIN's shortlist as RankNet features."""

    users: np.ndarray  # (B,) user indices
    candidates: list[Tensor]  # per user (N_u,) recall candidates
    din_scores: list[Tensor]  # per user (N_u,) DIN logits of the candidates
    shortlist: Tensor  # (B, M) item indices in DIN order (padded with 0)
    features: Tensor  # (B, M, F) RankNet features, similarity to the items above in DIN order
    vectors: Tensor  # (B, M, D) item embeddings of the shortlist
    mask: Tensor  # (B, M) True for real candidates


@torch.inference_mode()
def candidate_lists(
    models: CascadeModels,
    state: FrozenState,
    users: np.ndarray,
    seen: sp.csr_matrix,
    trained_users: np.ndarray,
    config: CascadeConfig,
) -> CandidateLists:
    """Recall -> DIN -> DIN's top ``config.rerank_depth`` for every user in ``users``.

    ``trained_users`` (n_users,) bool says which users have a trained LightGCN row.
    """
    if models.item_embeddings is None or models.din is None:
        raise ValueError("candidate lists need LightGCN embeddings and a DIN")
    depth = config.rerank_depth
    dim = models.item_embeddings.shape[1]
    n = len(users)
    shortlist = torch.zeros(n, depth, dtype=torch.long)
    features = torch.zeros(n, depth, 6)
    vectors = torch.zeros(n, depth, dim)
    mask = torch.zeros(n, depth, dtype=torch.bool)
    candidates_out: list[Tensor] = []
    scores_out: list[Tensor] = []
    for row, user in enumerate(users):
        request = request_for(state, int(user), seen, bool(trained_users[user]))
        recent = request.recent_items[: config.max_history]
        candidates, recall_scores, _, query = recall(models, state.items, request, config)
        context = din_context(state.items, candidates, request.user_context)
        logits, _, _ = rank(models.din, candidates, recent, context, recall_scores)
        candidates_out.append(candidates)
        scores_out.append(logits)
        m = min(depth, candidates.numel())
        top = torch.topk(logits, m).indices
        items = candidates[top]
        item_vectors = models.item_embeddings[items]  # (M, D)
        gcn = item_vectors @ query if query is not None else torch.zeros(m)
        similarity = similarity_to_above(item_vectors, torch.arange(m))
        features[row, :m] = rerank_features(
            logits[top],
            gcn,
            state.items.popularity[items],
            state.items.recency[items],
            state.items.ctr[items],
            similarity,
        )
        shortlist[row, :m] = items
        vectors[row, :m] = item_vectors
        mask[row, :m] = True
    return CandidateLists(users, candidates_out, scores_out, shortlist, features, vectors, mask)


def list_labels(lists: CandidateLists, relevant: sp.csr_matrix, rows: np.ndarray) -> Tensor:
    """(B, M) float 1 where the shortlisted item is relevant to the list's user.

    ``rows`` maps each list to its row of ``relevant``.
    """
    dense = torch.from_numpy(relevant[rows].toarray() > 0)  # (B, n_items)
    return (torch.gather(dense, 1, lists.shortlist) & lists.mask).float()
