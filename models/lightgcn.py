"""LightGCN (He et al., 2020): recall embeddings from the user-item interaction graph.

No feature transforms and no non-linearities: each layer is one multiplication by the
symmetric-normalized bipartite adjacency, and the final embedding is the mean of the
layer-0 (ego) embedding and every propagated layer. Trained with BPR on (user, positive
item, sampled negative item) triples; the exported embeddings feed recall in the cascade.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class LightGCNConfig:
    n_users: int
    n_items: int
    dim: int = 64  # embedding width; the paper's default, and recall is one (I, D) @ (D,) product
    layers: int = 3  # propagation hops; the paper finds 3 best, more layers over-smooth
    reg_weight: float = 1e-4  # L2 on the batch's ego embeddings, the paper's only regularizer
    init_std: float = 0.1  # normal init; small so early BPR margins are near zero


def normalized_adjacency(user_idx: Tensor, item_idx: Tensor, n_users: int, n_items: int) -> Tensor:
    """The symmetric-normalized bipartite adjacency D^-1/2 A D^-1/2, sparse CSR (U+I, U+I).

    `user_idx` and `item_idx` are parallel (E,) index tensors, one entry per interaction;
    repeated pairs count once. Nodes 0..U-1 are users, U..U+I-1 are items. A node with no
    edges keeps an all-zero row, so its propagated layers are zero.
    """
    n_nodes = n_users + n_items
    pairs = torch.unique(torch.stack([user_idx.long(), item_idx.long()]), dim=1)  # (2, E')
    users, items = pairs[0], pairs[1] + n_users
    rows = torch.cat([users, items])  # (2E',) both directions: the graph is undirected
    cols = torch.cat([items, users])
    degree = torch.bincount(rows, minlength=n_nodes).float()  # (U+I,)
    inv_sqrt = degree.clamp(min=1.0).rsqrt()
    values = inv_sqrt[rows] * inv_sqrt[cols]  # 1 / sqrt(d_row * d_col)
    adj = torch.sparse_coo_tensor(
        torch.stack([rows, cols]), values, (n_nodes, n_nodes), check_invariants=True
    )
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the product is stable
        warnings.simplefilter("ignore", UserWarning)
        return adj.coalesce().to_sparse_csr()


class _SymmetricProduct(torch.autograd.Function):
    """``adj @ x`` for a symmetric sparse ``adj``, whose gradient w.r.t. ``x`` is
    ``adj @ grad`` again. ``torch.sparse.mm``'s own backward transposes and re-sorts the
    matrix on every step: at 1M events (2.2M non-zeros) a training step took 2.4x as long."""

    @staticmethod
    def forward(ctx: Any, adj: Tensor, x: Tensor) -> Tensor:
        ctx.adj = adj
        return adj @ x

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, Tensor]:
        return None, ctx.adj @ grad


class LightGCN(nn.Module):
    def __init__(self, config: LightGCNConfig) -> None:
        super().__init__()
        self.config = config
        self.user_embedding = nn.Embedding(config.n_users, config.dim)
        self.item_embedding = nn.Embedding(config.n_items, config.dim)
        nn.init.normal_(self.user_embedding.weight, std=config.init_std)
        nn.init.normal_(self.item_embedding.weight, std=config.init_std)

    def propagate(self, adj: Tensor) -> tuple[Tensor, Tensor]:
        """Final embeddings: the mean over layers 0..K of the propagated node embeddings."""
        ego = torch.cat([self.user_embedding.weight, self.item_embedding.weight])  # (U+I, D)
        layer = ego
        total = ego
        for _ in range(self.config.layers):
            layer = _SymmetricProduct.apply(adj, layer)  # (U+I, D)
            total = total + layer
        final = total / (self.config.layers + 1)  # (U+I, D)
        return final[: self.config.n_users], final[self.config.n_users :]  # (U, D), (I, D)

    def forward(
        self, adj: Tensor, users: Tensor, pos_items: Tensor, neg_items: Tensor
    ) -> tuple[Tensor, Tensor]:
        """The BPR loss (see :meth:`bpr_loss`): a forward that DistributedDataParallel wraps."""
        return self.bpr_loss(adj, users, pos_items, neg_items)

    def bpr_loss(
        self, adj: Tensor, users: Tensor, pos_items: Tensor, neg_items: Tensor
    ) -> tuple[Tensor, Tensor]:
        """BPR over a batch of (B,) triples, plus L2 on the batch's ego embeddings.

        Returns (total loss, BPR part) so the caller can log the ranking term alone.
        """
        user_final, item_final = self.propagate(adj)
        u = user_final[users]  # (B, D)
        pos_scores = (u * item_final[pos_items]).sum(-1)  # (B,)
        neg_scores = (u * item_final[neg_items]).sum(-1)  # (B,)
        bpr = F.softplus(neg_scores - pos_scores).mean()  # -log sigmoid(pos - neg)
        ego_norm = (
            self.user_embedding(users).pow(2).sum()
            + self.item_embedding(pos_items).pow(2).sum()
            + self.item_embedding(neg_items).pow(2).sum()
        )
        reg = self.config.reg_weight * 0.5 * ego_norm / users.numel()
        return bpr + reg, bpr

    @torch.no_grad()
    def export_embeddings(self, adj: Tensor) -> tuple[Tensor, Tensor]:
        """Detached final (user (U, D), item (I, D)) embeddings: what recall serves."""
        user_final, item_final = self.propagate(adj)
        return user_final.detach().clone(), item_final.detach().clone()

    @torch.no_grad()
    def store_exports(self, adj: Tensor) -> None:
        """Keep the exported embeddings as buffers ``user_embeddings`` / ``item_embeddings``,
        so the state dict carries what recall serves (the propagated embeddings need the
        training graph, which serving does not have)."""
        users, items = self.export_embeddings(adj)
        self.register_buffer("user_embeddings", users, persistent=True)
        self.register_buffer("item_embeddings", items, persistent=True)

    def exported(self) -> tuple[Tensor, Tensor]:
        """The (user (U, D), item (I, D)) embeddings kept by :meth:`store_exports`."""
        users, items = (
            getattr(self, "user_embeddings", None),
            getattr(self, "item_embeddings", None),
        )
        if not isinstance(users, Tensor) or not isinstance(items, Tensor):
            raise ValueError("no exported embeddings: call store_exports(adj) after training")
        return users, items
