"""RankNet (Burges et al., 2005): a per-candidate scorer trained on pairs within a list.

The scorer is an MLP over one feature vector per candidate; the loss is the pairwise
logistic loss over every pair of candidates in a list whose graded labels differ.

Features, in `RERANK_FEATURES` order: the DIN score, the LightGCN score, popularity,
recency, click-through rate and the similarity to the items ranked above. The last one
depends on the order being built, so at inference the list is built greedily
(`greedy_rerank`): at each position, every remaining candidate's similarity is the largest
cosine similarity between its item embedding and the items already placed (0 at the first
position), RankNet scores the remaining candidates with it, and the best allowed one is
placed. In training, `similarity_to_above` computes the same quantity against the order
the list was served in (which the same greedy pass produced) or, before any served lists
exist, against the DIN order.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

RERANK_FEATURES = ("din_score", "gcn_score", "popularity", "recency", "ctr", "similarity_above")
SIMILARITY_COLUMN = RERANK_FEATURES.index("similarity_above")


@dataclass
class RankNetConfig:
    n_features: int = len(RERANK_FEATURES)  # one column per RERANK_FEATURES entry
    hidden: tuple[int, ...] = (32, 16)  # small: it re-orders tens of candidates per request
    sigma: float = 1.0  # steepness of P(i above j) = sigmoid(sigma * (s_i - s_j))


class RankNet(nn.Module):
    def __init__(self, config: RankNetConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        width = config.n_features
        for hidden in config.hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.mlp: nn.Module = nn.Sequential(*layers)
        # The weights as arrays for the greedy placement (``place_greedily``): set by
        # ``freeze_for_placement`` on a model that is only served, never trained further.
        self.frozen: FrozenMlp | None = None

    def freeze_for_placement(self) -> None:
        """Keep a copy of the MLP's weights as float32 arrays for ``place_greedily``; call
        once the weights are final (a loaded set)."""
        self.frozen = FrozenMlp.of(self)

    def forward(self, features: Tensor) -> Tensor:
        # features (..., N, F) -> scores (..., N)
        return self.mlp(features).squeeze(-1)

    def trace_for_serving(self) -> None:
        """Replace the MLP with its TorchScript trace: the same layers and weights (the
        state dict keeps its keys), any number of candidates, without the Python dispatch
        of ``nn.Sequential``, called ten times per list by the greedy placement. Leaves the
        model in eval mode.

        torch 2.15 announces TorchScript's deprecation (a FutureWarning, silenced here) in
        favour of ``torch.export`` and ``torch.compile``; measured on this model and SASRec,
        an exported program's module ran 1.4-2.8x slower than eager and the trace 1.7-2x
        faster, and ``torch.compile`` needs a compiler at load time. The loader serves the
        eager model when tracing fails."""
        self.eval()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            self.mlp = torch.jit.trace(self.mlp, torch.zeros(2, self.config.n_features))


@dataclass(frozen=True)
class FrozenMlp:
    """RankNet's linear layers as float32 arrays: ``(weight (out, in), bias (out,))`` each,
    ReLU between them. The greedy placement runs ten small forward passes per list; on
    arrays of 250 x 32 numpy's call costs a fraction of torch's dispatch."""

    layers: tuple[tuple[np.ndarray, np.ndarray], ...]

    @classmethod
    def of(cls, model: RankNet) -> FrozenMlp:
        linears = [m for m in model.mlp.modules() if isinstance(m, nn.Linear)]
        if len(linears) != len(model.config.hidden) + 1:
            raise ValueError(f"RankNet's MLP has {len(linears)} linear layers, not plain ones")
        return cls(
            tuple(
                (
                    layer.weight.detach().float().numpy().copy(),
                    layer.bias.detach().float().numpy().copy(),
                )
                for layer in linears
            )
        )


def ranknet_loss(scores: Tensor, labels: Tensor, mask: Tensor, sigma: float = 1.0) -> Tensor:
    """Mean pairwise logistic loss over all ordered pairs (i, j) with labels[i] > labels[j].

    scores, labels (B, N) (graded labels, higher is better), mask (B, N) True for real
    candidates. Pairs with equal labels or a padded member do not count. A batch without
    any such pair gives a zero loss that still carries a graph.
    """
    diff = scores.unsqueeze(-1) - scores.unsqueeze(-2)  # (B, N, N): s_i - s_j
    better = labels.unsqueeze(-1) > labels.unsqueeze(-2)  # (B, N, N): i should be above j
    valid = mask.unsqueeze(-1) & mask.unsqueeze(-2)  # (B, N, N)
    pairs = better & valid
    n_pairs = pairs.sum()
    if n_pairs == 0:
        return scores.sum() * 0.0
    losses = F.softplus(-sigma * diff)  # -log sigmoid(sigma * (s_i - s_j))
    return (losses * pairs).sum() / n_pairs


def rerank_features(
    din_score: Tensor,
    gcn_score: Tensor,
    popularity: Tensor,
    recency: Tensor,
    ctr: Tensor,
    similarity_above: Tensor,
) -> Tensor:
    """Stack per-candidate (..., N) features into (..., N, F) in RERANK_FEATURES order.

    Inputs should already be on comparable scales (logits, log1p counts, rates in [0, 1]);
    this function does not rescale.
    """
    return torch.stack([din_score, gcn_score, popularity, recency, ctr, similarity_above], -1)


def similarity_to_above(item_vectors: Tensor, order: Tensor) -> Tensor:
    """For each candidate, the max cosine similarity to the candidates placed before it.

    item_vectors (N, D) in candidate order; order (N,) a permutation, order[0] placed first.
    Returns (N,) in candidate order; the first-placed candidate gets 0.
    """
    unit = F.normalize(item_vectors, dim=-1)
    sims = unit @ unit.T  # (N, N)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device)  # position of each candidate
    above = rank.unsqueeze(0) < rank.unsqueeze(1)  # (N, N): [i, j] True if j is placed before i
    best = sims.masked_fill(~above, float("-inf")).max(dim=1).values  # (N,)
    return torch.where(torch.isinf(best), torch.zeros_like(best), best)


def greedy_rerank(
    score_fn: Callable[[Tensor], Tensor],
    base_features: Tensor,
    item_vectors: Tensor | None,
    k: int,
    allowed_fn: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Place up to k candidates one at a time; returns (positions (k',), scores (k',)).

    base_features (N, F) with the similarity column left at any value: it is recomputed at
    every step from item_vectors (N, D) (zero when item_vectors is None). score_fn maps
    (N, F) features to (N,) scores (a RankNet, or anything else). allowed_fn, given the
    positions placed so far (P,), returns an (N,) bool mask of candidates still allowed
    (business rules: exclusions, diversity); it overrides the scores, never the reverse.
    Stops early when no allowed candidate remains.
    """
    n = base_features.shape[0]
    features = base_features.clone()
    features[:, SIMILARITY_COLUMN] = 0.0
    unit = F.normalize(item_vectors, dim=-1) if item_vectors is not None else None
    best_similarity = torch.full((n,), float("-inf"))  # (N,) max similarity to placed items
    available = torch.ones(n, dtype=torch.bool)
    placed: list[int] = []
    placed_scores: list[Tensor] = []
    for _ in range(min(k, n)):
        scores = score_fn(features)  # (N,)
        allowed = available.clone()
        if allowed_fn is not None:
            allowed &= allowed_fn(torch.tensor(placed, dtype=torch.long))
        if not bool(allowed.any()):
            break
        choice = int(torch.argmax(scores.masked_fill(~allowed, float("-inf"))))
        placed.append(choice)
        placed_scores.append(scores[choice])
        available[choice] = False
        if unit is not None:
            best_similarity = torch.maximum(best_similarity, unit @ unit[choice])  # (N,)
            features[:, SIMILARITY_COLUMN] = best_similarity
    if not placed:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0)
    return torch.tensor(placed, dtype=torch.long), torch.stack(placed_scores)


def _standardized_array(values: np.ndarray) -> np.ndarray:
    """``models.cascade._standardized`` for a float32 array: torch's unbiased deviation."""
    n = values.size
    centred = values - values.sum() / n
    if n < 2:
        return centred
    std = np.sqrt(np.dot(centred, centred) / (n - 1))
    return centred / std if std > 0 else centred


def place_greedily(
    mlp: FrozenMlp,
    base_features: Tensor,
    blend: Tensor | None,
    item_vectors: Tensor | None,
    k: int,
    not_excluded: Tensor,
    categories: Tensor | None = None,
    max_per_category: int = 0,
) -> tuple[Tensor, Tensor]:
    """``greedy_rerank`` for a RankNet scorer, in one pass over arrays: the same positions
    and scores (up to float rounding).

    The scorer at each step is the RankNet of ``mlp`` over ``base_features`` (N, F) with
    the similarity column replaced, standardized and plus ``blend`` (N,) when a blend is
    given (``models.cascade._final_scorer``), raw otherwise. The rules: candidates of
    ``not_excluded`` (N,) only, and with ``categories`` (N,) and ``max_per_category`` > 0
    at most that many per category. Only the similarity column changes between steps, so
    the first layer's product with the other columns is computed once.
    """
    n = base_features.shape[0]
    features = base_features.detach().float().numpy().copy()
    features[:, SIMILARITY_COLUMN] = 0.0
    (first, first_bias), *rest = mlp.layers
    fixed = features @ first.T + first_bias  # (N, H): every column but the similarity
    similarity_weights = first[:, SIMILARITY_COLUMN]  # (H,)
    layers = [(weight.T.copy(), bias) for weight, bias in rest]  # (in, out) for x @ w
    unit = (
        F.normalize(item_vectors.detach().float(), dim=-1).numpy()
        if item_vectors is not None
        else None
    )
    extra = blend.detach().float().numpy() if blend is not None else None
    allowed = not_excluded.numpy().copy()  # (N,) cleared as candidates are placed
    cats = categories.numpy() if categories is not None and max_per_category > 0 else None
    per_category: dict[int, int] = {}
    similarity = np.zeros(n, dtype=np.float32)
    first_out = np.empty_like(fixed)
    placed: list[int] = []
    placed_scores: list[float] = []
    steps = min(k, n)
    for step in range(steps):
        np.multiply(similarity[:, None], similarity_weights, out=first_out)
        first_out += fixed
        hidden = np.maximum(first_out, 0.0, out=first_out)
        for index, (weight, bias) in enumerate(layers):
            hidden = hidden @ weight
            hidden += bias
            if index < len(layers) - 1:
                np.maximum(hidden, 0.0, out=hidden)
        scores = hidden[:, 0]  # (N,)
        if extra is not None:
            scores = _standardized_array(scores) + extra
        if not allowed.any():
            break
        choice = int(np.argmax(np.where(allowed, scores, -np.inf)))
        placed.append(choice)
        placed_scores.append(float(scores[choice]))
        allowed[choice] = False
        if cats is not None:
            category = int(cats[choice])
            per_category[category] = per_category.get(category, 0) + 1
            if per_category[category] >= max_per_category:
                allowed &= cats != category
        if unit is not None and step + 1 < steps:
            nearness = unit @ unit[choice]
            similarity = nearness if step == 0 else np.maximum(similarity, nearness)
    if not placed:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0)
    return torch.tensor(placed, dtype=torch.long), torch.tensor(placed_scores)


def place_greedily_many(
    mlp: FrozenMlp,
    base_features: Tensor,
    blends: list[Tensor | None],
    item_vectors: Tensor | None,
    k: int,
    not_excluded: Tensor,
    categories: Tensor | None = None,
    max_per_category: int = 0,
) -> list[tuple[Tensor, Tensor]]:
    """``place_greedily`` once per blend of ``blends`` over the same shortlist, the
    placements side by side: each step is one pass over (placements, N, H) arrays, one
    row per distinct placement so far, instead of a pass per blend (the prequential
    validation places every shortlist once per blend of its grid, and numpy's per-call
    cost was most of that). The same positions and scores as ``place_greedily`` per
    blend, up to float rounding.
    """
    n = base_features.shape[0]
    b = len(blends)
    features = base_features.detach().float().numpy().copy()
    features[:, SIMILARITY_COLUMN] = 0.0
    (first, first_bias), *rest = mlp.layers
    fixed = features @ first.T + first_bias  # (N, H)
    similarity_weights = first[:, SIMILARITY_COLUMN]  # (H,)
    layers = [(weight.T.copy(), bias) for weight, bias in rest]
    unit = (
        F.normalize(item_vectors.detach().float(), dim=-1).numpy()
        if item_vectors is not None
        else None
    )
    blended = np.array([blend is not None for blend in blends])  # (B,)
    extra = np.zeros((b, n), np.float32)
    for row, blend in enumerate(blends):
        if blend is not None:
            extra[row] = blend.detach().float().numpy()
    allowed = np.tile(not_excluded.numpy(), (b, 1))  # (B, N)
    cats = None
    if categories is not None and max_per_category > 0:
        # codes 0..C-1 whatever the categories' values, to count them in a (B, C) array
        cats = np.unique(categories.numpy(), return_inverse=True)[1].reshape(-1)
    per_category = np.zeros((b, int(cats.max()) + 1 if cats is not None and n else 1), np.int64)
    similarity = np.zeros((b, n), np.float32)
    steps = min(k, n)
    placed = np.full((b, steps), -1, np.int64)
    placed_scores = np.zeros((b, steps), np.float32)
    rows = np.arange(b)
    for step in range(steps):
        # RankNet's scores depend on a row's placements so far only (its similarity
        # column): rows that placed the same items score alike, so the MLP runs once per
        # distinct placement (at 1M events the 53 blends of the validation grid had 2 to
        # 25 distinct ones per step, 121 where 477 rows were scored)
        if step == 0:
            firsts, inverse = np.zeros(1, np.int64), np.zeros(b, np.int64)
        else:
            _, firsts, inverse = np.unique(
                placed[:, :step], axis=0, return_index=True, return_inverse=True
            )
        width = firsts.size
        hidden = fixed[None] + similarity[firsts, :, None] * similarity_weights  # (U, N, H)
        np.maximum(hidden, 0.0, out=hidden)
        out = hidden.reshape(width * n, -1)
        for index, (weight, bias) in enumerate(layers):
            out = out @ weight
            out += bias
            if index < len(layers) - 1:
                np.maximum(out, 0.0, out=out)
        raw = out[:, 0].reshape(width, n)[inverse.reshape(-1)]  # (B, N)
        centred = raw - raw.sum(axis=1, keepdims=True) / n
        if n >= 2:
            std = np.sqrt(np.einsum("bn,bn->b", centred, centred) / (n - 1))
            centred = np.divide(centred, std[:, None], out=centred.copy(), where=std[:, None] > 0)
        scores = np.where(blended[:, None], centred + extra, raw)
        live = allowed.any(axis=1)  # a row with nothing left stops placing
        if not live.any():
            break
        choice = np.argmax(np.where(allowed, scores, -np.inf), axis=1)  # (B,)
        placed[live, step] = choice[live]
        placed_scores[live, step] = scores[rows, choice][live]
        allowed[rows[live], choice[live]] = False
        if cats is not None:
            chosen = cats[choice]
            per_category[rows[live], chosen[live]] += 1
            full = live & (per_category[rows, chosen] >= max_per_category)
            if full.any():
                allowed[full] &= cats[None, :] != chosen[full, None]
        if unit is not None and step + 1 < steps:
            nearness = unit[choice] @ unit.T  # (B, N)
            similarity = nearness if step == 0 else np.maximum(similarity, nearness)
    out_lists = []
    for row in range(b):
        taken = placed[row] >= 0
        out_lists.append(
            (
                torch.from_numpy(placed[row][taken].copy()),
                torch.from_numpy(placed_scores[row][taken].copy()),
            )
        )
    return out_lists
