"""Deep Interest Network (Zhou et al., 2018): a candidate scored against the user's behaviours.

The activation unit reads [query, key, query - key, query * key] for every past behaviour
(key) and the candidate (query) and gives one weight per behaviour. As in the paper the
weights are NOT softmax-normalized across behaviours: their sum carries how strongly the
user's history speaks to this candidate (a user with ten related behaviours scores higher
than a user with one), which a softmax would erase. Our one departure: each weight goes
through a sigmoid, so it lies in (0, 1). The paper leaves it unbounded, but then the sign
is arbitrary (a model may mark the decisive behaviour with a large negative weight) and
"the largest weight" would not name it; bounded, non-negative weights keep the largest one
meaningful and keep the pooled vector's scale stable over 50 behaviours. Padding positions
get weight exactly zero.

The weighted sum of behaviour embeddings (the interest vector) is concatenated with the
candidate's embedding and the dense context features, and an MLP gives one click logit.

The largest weight names the behaviour that drove a score: the cascade's `reason`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class DINConfig:
    n_items: int
    item_dim: int = 32  # item-id embedding width; 64 scored no better on MovieLens
    n_categories: int = 0  # > 0 adds a category embedding to every item (needs item_categories)
    category_dim: int = 8  # width of that category embedding, concatenated to the item's
    context_dim: int = 4  # dense per-candidate context (popularity, recency, user activity, ...)
    attention_hidden: int = 32  # activation-unit width; the paper uses 80-40, one layer suffices
    mlp_hidden: tuple[int, ...] = (64, 32)  # the scoring MLP; the paper uses 200-80
    activation: str = "prelu"  # "prelu" or "dice" (the paper's data-adaptive activation)
    init_std: float = 0.05  # item/category embedding init


class Dice(nn.Module):
    """Dice: a PReLU whose rectification point follows the batch statistics of its input."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(width, affine=False, eps=1e-8)
        self.alpha = nn.Parameter(torch.zeros(width))

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(-1, x.shape[-1])  # (N, H) batch statistics over every leading dim
        p = torch.sigmoid(self.norm(flat)).reshape(x.shape)
        return p * x + (1 - p) * self.alpha * x


class PReLU(nn.Module):
    """PReLU with one slope per feature of the LAST dim (nn.PReLU's channels are dim 1)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.full((width,), 0.25))

    def forward(self, x: Tensor) -> Tensor:
        # one fused kernel: F.prelu's channels are dim 1 of a 2-D input
        return F.prelu(x.reshape(-1, x.shape[-1]), self.alpha).reshape(x.shape)


def _activation(name: str, width: int) -> nn.Module:
    if name == "prelu":
        return PReLU(width)
    if name == "dice":
        return Dice(width)
    raise ValueError(f"unknown activation {name!r}: expected 'prelu' or 'dice'")


class ActivationUnit(nn.Module):
    """Weight in (0, 1) per behaviour from an MLP over [q, k, q - k, q * k]; padding gets 0.

    The first layer is one Linear over that 4E-wide concatenation, written in its folded
    form W_q q + W_k k + W_p (q * k) (the q - k block folds into the q and k blocks): the
    same function, but q's and k's terms are computed once per candidate and once per
    behaviour instead of once per (candidate, behaviour) pair, which is what keeps 200
    candidates x 50 behaviours inside the latency budget.
    """

    def __init__(self, embed_dim: int, hidden: int, activation: str) -> None:
        super().__init__()
        self.query_proj = nn.Linear(embed_dim, hidden)
        self.key_proj = nn.Linear(embed_dim, hidden, bias=False)
        self.product_proj = nn.Linear(embed_dim, hidden, bias=False)
        self.act = _activation(activation, hidden)
        self.out = nn.Linear(hidden, 1)

    def forward(self, query: Tensor, keys: Tensor, mask: Tensor) -> Tensor:
        # query (B, E), keys (B or 1, L, E), mask (B or 1, L) -> weights (B, L)
        # The (B, L, H) tensor is the cost at serving size (200 x 50 x 64): build it once
        # and add the per-candidate and per-behaviour terms in place (safe for autograd:
        # a Linear's backward does not read its output).
        hidden = self.product_proj(query.unsqueeze(1) * keys)  # (B, L, H)
        hidden += self.query_proj(query).unsqueeze(1)  # (B, 1, H) broadcast
        hidden += self.key_proj(keys)  # (B or 1, L, H) broadcast
        weights = torch.sigmoid(self.out(self.act(hidden))).squeeze(-1)  # (B, L)
        return weights.masked_fill(~mask, 0.0)


class DIN(nn.Module):
    def __init__(self, config: DINConfig, item_categories: Tensor | None = None) -> None:
        super().__init__()
        self.config = config
        self.item_embedding = nn.Embedding(config.n_items, config.item_dim)
        nn.init.normal_(self.item_embedding.weight, std=config.init_std)
        embed_dim = config.item_dim
        self.category_embedding: nn.Embedding | None = None
        if config.n_categories > 0:
            if item_categories is None or item_categories.shape != (config.n_items,):
                raise ValueError("n_categories > 0 needs item_categories of shape (n_items,)")
            self.category_embedding = nn.Embedding(config.n_categories, config.category_dim)
            nn.init.normal_(self.category_embedding.weight, std=config.init_std)
            embed_dim += config.category_dim
        # A buffer, so the item -> category map is saved with the weights it was trained with.
        categories = item_categories if item_categories is not None else torch.zeros(0)
        self.register_buffer("item_categories", categories.long(), persistent=True)
        self.attention = ActivationUnit(embed_dim, config.attention_hidden, config.activation)
        layers: list[nn.Module] = []
        width = 2 * embed_dim + config.context_dim  # [interest, candidate, context]
        for hidden in config.mlp_hidden:
            layers += [nn.Linear(width, hidden), _activation(config.activation, hidden)]
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def embed(self, items: Tensor) -> Tensor:
        """Item (and category) embedding: (...,) indices -> (..., E)."""
        vectors = self.item_embedding(items)
        if self.category_embedding is not None:
            categories = self.item_categories[items]  # type: ignore[index]
            vectors = torch.cat([vectors, self.category_embedding(categories)], dim=-1)
        return vectors

    def forward(
        self, candidates: Tensor, history: Tensor, history_mask: Tensor, context: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Click logits (B,) and attention weights (B, L).

        candidates (B,), history (B, L) item indices, most recent first; history_mask (B, L)
        True where a behaviour is real (padding may hold any valid index); context (B, C).
        """
        return self._score(self.embed(candidates), self.embed(history), history_mask, context)

    def score_candidates(
        self, candidates: Tensor, history: Tensor, history_mask: Tensor, context: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Many candidates for ONE user in one forward pass.

        candidates (N,), history (L,), history_mask (L,), context (N, C) ->
        logits (N,), attention (N, L). The history is embedded and projected once and
        broadcast over the candidates; the result equals `forward` with the history repeated.
        """
        keys = self.embed(history).unsqueeze(0)  # (1, L, E)
        return self._score(self.embed(candidates), keys, history_mask.unsqueeze(0), context)

    def _score(
        self, query: Tensor, keys: Tensor, mask: Tensor, context: Tensor
    ) -> tuple[Tensor, Tensor]:
        # query (B, E), keys (B or 1, L, E), mask (B or 1, L), context (B, C)
        weights = self.attention(query, keys, mask)  # (B, L)
        interest = torch.matmul(weights.unsqueeze(1), keys).squeeze(1)  # (B, E) sum pooling
        features = torch.cat([interest, query, context], dim=-1)  # (B, 2E + C)
        logits = self.mlp(features).squeeze(-1)  # (B,)
        return logits, weights
