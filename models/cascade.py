"""The serving cascade for one request: recall -> rank -> re-rank -> business rules.

Pure tensors: the caller (the API) reads the user's recent items and the item table from
the online store and hands in the loaded models; nothing here does I/O.

1. Recall scores every item by a dot product with the user vector: the unit-normalized
   trained LightGCN user embedding blended with the unit-normalized, recency-weighted mean
   of the embeddings of the user's recent items. A user unknown at training time uses the
   recent items alone, so a first click already gives recall. Seen items are removed and
   the top `n_candidates` kept. With an item prior in the set (recent popularity at the
   training cutoff) and `prior_weight` > 0, the standardized prior is added to the
   standardized dot products: on a time split most of what users do next is what is
   popular now, which the embeddings alone under-weight. A user with neither vector is
   a cold start: recall ranks by the prior ("cold_start"), or by live popularity when the
   set has no prior ("popularity"). Two channels come first: the items most co-visited
   with the recent items (``covisit_candidates``), then SASRec's top next items after
   the recent items (``sasrec_candidates``; one forward pass over at most the store's
   recent list).
2. Rank scores all candidates with DIN in one forward pass over the recent items; each
   candidate's `reason` is the recent item with the largest attention weight.
   Fallback: the recall score (which is popularity when recall fell back too).
3. Re-rank takes DIN's top `rerank_depth` and places the top k greedily with RankNet
   (see `models.ranknet.greedy_rerank`); its LightGCN feature is the item embedding's dot
   product with `user_vector`. With `final_recall_weight` > 0, the standardized recall
   scores of the shortlist are added to RankNet's standardized scores, so RankNet moves
   items only as far as its margins outweigh recall's; ``covisit_weight`` and
   ``sasrec_weight`` add the standardized co-visitation and SASRec scores the same way.
   Fallback (no RankNet, or no DIN to feed it): the rank order.
4. Business rules are applied last, as a veto at every placement: excluded items and items
   whose category already holds `max_per_category` of the places are skipped.

Every stage reports which source answered, so the response can say what served it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from models.din import DIN
from models.ranknet import (
    RERANK_FEATURES,
    RankNet,
    greedy_rerank,
    place_greedily,
    place_greedily_many,
    rerank_features,
)
from models.sasrec import Sasrec


@dataclass
class CascadeConfig:
    n_candidates: int = 200  # recall depth: what DIN scores in one pass
    rerank_depth: int = 50  # DIN's top M that RankNet and the rules choose the final k from
    recent_weight: float = 0.5  # share of the recent-items vector in a known user's vector
    recency_decay: float = 0.8  # weight of the i-th most recent item is decay**i
    max_history: int = 20  # recent items DIN attends over (and recall averages); 50 cost
    # 2.5x as much and added nothing on MovieLens
    max_per_category: int = 0  # diversity rule: at most this many per category in top k; 0 off
    # second recall channel: this many of the n_candidates are the top items by trend score
    # (recent popularity), so the ranker can rank recent-popular items LightGCN misses; 0 off
    trend_candidates: int = 0
    # weight of the standardized item prior added to the standardized recall scores; 0 off
    prior_weight: float = 0.0
    # window of the item prior (distinct users per item in the last N days before the
    # cutoff); read at training time only, serving uses the prior saved with the set
    prior_days: float = 14.0
    # weight of the standardized recall score (embeddings plus prior) added to RankNet's
    # standardized scores over the shortlist at every greedy placement; 0 off. On a time
    # split RankNet, trained on a few hundred lists, orders users with history worse than
    # recall does; the blend lets it re-order only where it is confident
    final_recall_weight: float = 0.0
    # co-visitation channel (``covisit_scores``): this many of the n_candidates are the
    # items most co-visited with the user's recent items, ahead of the other channels; 0 off
    covisit_candidates: int = 0
    # weight of the standardized co-visitation score added to the final scorer's
    # standardized scores over the shortlist; 0 off
    covisit_weight: float = 0.0
    covisit_history: int = 20  # recent items whose neighbours count, most recent first ...
    covisit_decay: float = 0.9  # ... the i-th weighted decay**i, as the item-kNN baseline
    # sequential channel (``sasrec_scores``): this many of the n_candidates are SASRec's
    # top next items after the user's recent items, after co-visitation's; 0 off
    sasrec_candidates: int = 0
    # weight of the standardized SASRec score added to the final scorer's standardized
    # scores over the shortlist; 0 off
    sasrec_weight: float = 0.0


@dataclass
class Covisits:
    """Each item's co-visited neighbours as the online store holds them (``streams.folding``
    ``COVISIT_*``), by item index: a bounded top-W list per item."""

    neighbours: Tensor  # (I, W) long item indices, heaviest first; -1 pads
    weights: Tensor  # (I, W) float32 pair weights, parallel; 0 on padding
    totals: Tensor  # (I,) float32 the weight of every pair the item was in (the norm)


@dataclass
class ItemTable:
    """Per-item serving features, indexed by item index (all (I,))."""

    popularity: Tensor  # log1p interactions in the recent window: recall fallback and a feature
    recency: Tensor  # freshness in [0, 1], 1 = interacted with just now
    ctr: Tensor  # click-through rate of served impressions
    categories: Tensor | None = None  # long category per item; needed by the diversity rule
    covisits: Covisits | None = None  # the co-visitation channel; None: the store has none

    def context(self, items: Tensor) -> Tensor:
        # items (N,) -> (N, 3): the item side of DIN's context, [popularity, recency, ctr]
        return torch.stack([self.popularity[items], self.recency[items], self.ctr[items]], -1)


@dataclass
class CascadeModels:
    """What the registry gave us; any part may be None and its stage falls back."""

    user_embeddings: Tensor | None = None  # (U, D) from LightGCN.export_embeddings
    item_embeddings: Tensor | None = None  # (I, D)
    din: DIN | None = None
    ranknet: RankNet | None = None
    # (I,) log1p distinct users per item shortly before the training cutoff: what a user
    # without history is shown, and the recall blend's popularity term
    item_prior: Tensor | None = None
    sasrec: Sasrec | None = None  # next-item scores after the recent items (models.sasrec)
    # the prior standardised, and the prior it was computed from: the recall blend reads it
    # on every request (at 47k items its mean and std were two passes over the items)
    _standard_prior: tuple[Tensor, Tensor] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def standardized_prior(self) -> Tensor | None:
        """(I,) ``item_prior`` standardised (as ``_standardized``), computed once per prior
        (a prior replaced by another object is standardised again; never changed in place)."""
        prior = self.item_prior
        if prior is None:
            return None
        held = self._standard_prior
        if held is None or held[0] is not prior:
            held = (prior, _standardized(prior.float()))
            self._standard_prior = held
        return held[1]


def _empty_long() -> Tensor:
    return torch.zeros(0, dtype=torch.long)


@dataclass
class CascadeRequest:
    recent_items: Tensor  # (L,) long, most recent first; may be empty
    seen_items: Tensor = field(default_factory=_empty_long)  # (S,) never recommended
    user_index: int | None = None  # row of user_embeddings; None for users new since training
    user_context: Tensor = field(default_factory=lambda: torch.zeros(0))  # (Cu,) e.g. activity
    excluded_items: Tensor = field(default_factory=_empty_long)  # (X,) business exclusions
    k: int = 10


@dataclass
class CascadeResult:
    items: Tensor  # (k',) long item indices, best first; k' < k only if candidates run out
    scores: Tensor  # (k',) the score of the stage that ordered them
    reasons: Tensor  # (k',) long item index of the recent item with the top DIN weight; -1 none
    recall_source: str  # "lightgcn", "cold_start" (the set's prior) or "popularity"
    rank_source: str  # "din" or "recall" ("none" when no candidate was left)
    rerank_source: str  # "ranknet" or "rank_order" ("none" when no candidate was left)
    # (k',) the rank stage's score of each pick (DIN's logit when rank_source is "din"):
    # what the monitor compares with the set's reference, whatever ordered the list last
    rank_scores: Tensor | None = None


def din_context(items: ItemTable, candidates: Tensor, user_context: Tensor) -> Tensor:
    """DIN's context (N, 3 + Cu): the candidate's item features, then the user's, repeated.

    Training builds its examples with this same function, so serving cannot drift from it.
    """
    item_side = items.context(candidates)  # (N, 3)
    user_side = user_context.to(item_side.dtype).unsqueeze(0).expand(candidates.shape[0], -1)
    return torch.cat([item_side, user_side], dim=-1)


def user_vector(
    models: CascadeModels, request: CascadeRequest, config: CascadeConfig
) -> Tensor | None:
    """The recall query (D,), or None when neither a trained nor a recent vector exists."""
    if models.item_embeddings is None:
        return None
    parts: list[tuple[float, Tensor]] = []
    if models.user_embeddings is not None and request.user_index is not None:
        parts.append((1.0 - config.recent_weight, models.user_embeddings[request.user_index]))
    recent = request.recent_items[: config.max_history]
    if recent.numel() > 0:
        decay = config.recency_decay ** torch.arange(recent.numel(), dtype=torch.float32)
        mean = (decay.unsqueeze(-1) * models.item_embeddings[recent]).sum(0) / decay.sum()
        parts.append((config.recent_weight, mean))  # (D,)
    if not parts:
        return None
    if len(parts) == 1:  # only one source: it is the whole vector, whatever the blend weight
        return F.normalize(parts[0][1], dim=-1)
    (w_user, trained), (w_recent, recent_mean) = parts
    return w_user * F.normalize(trained, dim=-1) + w_recent * F.normalize(recent_mean, dim=-1)


def covisit_contributions(
    covisits: Covisits, recent: Tensor, config: CascadeConfig
) -> tuple[Tensor, Tensor, Tensor]:
    """What each recent item adds to its neighbours' co-visitation scores.

    recent (L,) most recent first; the first ``covisit_history`` count, the i-th weighted
    ``covisit_decay**i``. The pair weight is cosine-normalized by both items' totals, as
    the item-kNN normalizes co-occurrence. Returns the recent items (H,), their
    neighbours (H, W) (-1 pads) and the weighted cosines (H, W) (0 on padding).
    """
    history = recent[: config.covisit_history]  # (H,)
    neighbours = covisits.neighbours[history]  # (H, W)
    real = neighbours >= 0
    safe = neighbours.clamp(min=0)
    norms = covisits.totals.clamp(min=0).sqrt()  # (I,)
    denominator = norms[history].unsqueeze(1) * norms[safe]  # (H, W)
    cosine = torch.where(
        real & (denominator > 0), covisits.weights[history] / denominator.clamp(min=1e-12), 0.0
    )
    decay = config.covisit_decay ** torch.arange(history.numel(), dtype=torch.float32)
    return history, neighbours, cosine * decay.unsqueeze(1)  # (H,), (H, W), (H, W)


def covisit_scores(items: ItemTable, recent: Tensor, config: CascadeConfig) -> Tensor | None:
    """(I,) the recency-weighted cosine co-visitation of every item with the user's recent
    items; None when the table has no co-visitation or the user no recent item."""
    if items.covisits is None or recent.numel() == 0:
        return None
    _, neighbours, contribution = covisit_contributions(items.covisits, recent, config)
    scores = torch.zeros(items.covisits.totals.shape[0])  # (I,)
    real = neighbours >= 0
    scores.index_add_(0, neighbours[real], contribution[real].float())
    return scores


def covisit_reasons(
    items: ItemTable, recent: Tensor, picks: Tensor, config: CascadeConfig
) -> Tensor:
    """(k,) for each pick, the recent item that added most to its co-visitation score;
    -1 where no recent item is co-visited with it."""
    none = torch.full_like(picks, -1)
    if items.covisits is None or recent.numel() == 0 or picks.numel() == 0:
        return none
    history, neighbours, contribution = covisit_contributions(items.covisits, recent, config)
    match = neighbours.unsqueeze(-1) == picks.view(1, 1, -1)  # (H, W, k)
    per_recent = (contribution.unsqueeze(-1) * match).sum(1)  # (H, k)
    best = per_recent.max(0)  # (k,)
    return torch.where(best.values > 0, history[best.indices], none)


def sasrec_scores(models: CascadeModels, recent: Tensor) -> Tensor | None:
    """(I,) SASRec's next-item score of every item after ``recent`` (L,) (most recent
    first, as the store holds them; the model reads its last ``max_length``, oldest
    first); None without a model or a recent item."""
    if models.sasrec is None or recent.numel() == 0:
        return None
    return models.sasrec.next_logits(recent.flip(0))


def sasrec_reasons(models: CascadeModels, recent: Tensor, picks: Tensor) -> Tensor:
    """(k,) for each pick, the recent item (of the first 20) whose SASRec item embedding
    is closest to the pick's: what the sequence model ties it to; -1 without SASRec."""
    if models.sasrec is None or recent.numel() == 0 or picks.numel() == 0:
        return torch.full_like(picks, -1)
    history = recent[:20]  # (H,)
    return history[models.sasrec.affinity(history, picks).argmax(0)]  # (k,)


def _standardized(values: Tensor) -> Tensor:
    std = values.std()
    return (values - values.mean()) / std if float(std) > 0 else values - values.mean()


def recall_scores(
    models: CascadeModels, items: ItemTable, request: CascadeRequest, config: CascadeConfig
) -> tuple[Tensor, str, Tensor | None]:
    """Recall's score of every item (I,), its source, and the user vector (or None).

    The one definition of the recall score: the cascade takes its top candidates from it
    and the static evaluation ranks the LightGCN stage by it.
    """
    query = user_vector(models, request, config)
    prior = models.item_prior
    if query is not None and models.item_embeddings is not None:
        scores = models.item_embeddings @ query  # (I,)
        standard_prior = models.standardized_prior()
        if standard_prior is not None and config.prior_weight > 0:
            scores = _standardized(scores) + config.prior_weight * standard_prior
        return scores, "lightgcn", query
    if prior is not None:
        return prior.clone().float(), "cold_start", None
    return items.popularity.clone().float(), "popularity", None


def recall(
    models: CascadeModels,
    items: ItemTable,
    request: CascadeRequest,
    config: CascadeConfig,
    covisited: Tensor | None = None,
    sequential: Tensor | None = None,
) -> tuple[Tensor, Tensor, str, Tensor | None]:
    """Top candidates (N,), their recall scores (N,), the source, and the user vector.

    ``covisited`` (I,): the request's ``covisit_scores`` when the caller has them already;
    ``sequential`` (I,): its ``sasrec_scores`` (the channel is off without them).
    """
    scores, source, query = recall_scores(models, items, request, config)
    scores[request.seen_items] = float("-inf")
    barred = ~torch.isfinite(scores)  # (I,) seen, or without a score: never a candidate
    n = min(config.n_candidates, scores.numel() - int(barred.sum()))
    chosen = torch.zeros_like(scores, dtype=torch.bool)  # (I,)
    if covisited is None and config.covisit_candidates > 0:
        covisited = covisit_scores(items, request.recent_items, config)
    if covisited is not None and config.covisit_candidates > 0:
        covisited = covisited.clone()  # first: what the user's recent items were visited with
        covisited[barred] = 0.0
        c = min(config.covisit_candidates, n, int((covisited > 0).sum()))
        chosen[torch.topk(covisited, c).indices] = True
    if sequential is not None and config.sasrec_candidates > 0:
        sequential = sequential.clone().float()  # next: what SASRec expects after them
        sequential[barred | chosen] = float("-inf")
        s = min(config.sasrec_candidates, n - int(chosen.sum()))
        chosen[torch.topk(sequential, s).indices] = True
    m = min(config.trend_candidates, n - int(chosen.sum()))
    if source != "lightgcn" and not bool(chosen.any()):
        top = torch.topk(scores, n)
        return top.indices, top.values, source, query
    if source == "lightgcn" and m > 0:
        trend = items.popularity.clone().float()  # (I,)
        trend[barred | chosen] = float("-inf")
        chosen[torch.topk(trend, m).indices] = True
    by_recall = torch.topk(scores, n).indices  # (n,)
    fill = by_recall[~chosen[by_recall]][: n - int(chosen.sum())]
    chosen[fill] = True
    candidates = chosen.nonzero().squeeze(-1)
    order = torch.argsort(scores[candidates], descending=True)
    return candidates[order], scores[candidates][order], source, query


def rank(
    din: DIN | None,
    candidates: Tensor,
    recent_items: Tensor,
    context: Tensor,
    recall_scores: Tensor,
) -> tuple[Tensor, Tensor, str]:
    """Scores (N,) and reasons (N,) (item index of the top-attention recent item, or -1)."""
    no_reason = torch.full_like(candidates, -1)
    if din is None:
        return recall_scores, no_reason, "recall"
    history = recent_items
    mask = torch.ones(history.numel(), dtype=torch.bool)
    if history.numel() == 0:  # one padded slot: DIN sees an empty interest vector
        history, mask = torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.bool)
    logits, attention = din.score_candidates(candidates, history, mask, context)  # (N,), (N, L)
    top = attention.masked_fill(~mask, float("-inf")).argmax(dim=-1)  # (N,)
    reasons = history[top] if bool(mask.any()) else no_reason
    return logits, reasons, "din"


@dataclass(frozen=True)
class Rules:
    """The business-rule veto for greedy placement: called with the positions placed so
    far (P,), the candidates (M,) still allowed."""

    not_excluded: Tensor  # (M,) bool
    categories: Tensor | None  # (M,) the candidates' categories when the cap is on
    max_per_category: int

    def __call__(self, placed: Tensor) -> Tensor:
        if self.categories is None or placed.numel() == 0:
            return self.not_excluded
        same = self.categories.unsqueeze(1) == self.categories[placed].unsqueeze(0)  # (M, P)
        return self.not_excluded & (same.sum(1) < self.max_per_category)


def _rules(
    candidates: Tensor, excluded_items: Tensor, categories: Tensor | None, max_per_category: int
) -> Rules:
    return Rules(
        not_excluded=~torch.isin(candidates, excluded_items),
        categories=(
            categories[candidates] if categories is not None and max_per_category > 0 else None
        ),
        max_per_category=max_per_category,
    )


def _blend(
    recall_scores: Tensor,
    covisited: Tensor | None,
    config: CascadeConfig,
    sequential: Tensor | None = None,
) -> Tensor | None:
    """The weighted standardized recall (M,), co-visitation (M,) and SASRec (M,) scores
    the final scorer adds to its own standardized score; None when all weights are off."""
    return _weighted_blend(
        config,
        _standardized(recall_scores.float()) if config.final_recall_weight > 0 else None,
        _standardized(covisited.float())
        if covisited is not None and config.covisit_weight > 0
        else None,
        _standardized(sequential.float())
        if sequential is not None and config.sasrec_weight > 0
        else None,
        recall_scores.shape,
    )


def _weighted_blend(
    config: CascadeConfig,
    recall: Tensor | None,
    covisited: Tensor | None,
    sequential: Tensor | None,
    shape: torch.Size,
) -> Tensor | None:
    """``_blend`` of scores already standardized (None: not blended)."""
    blend = torch.zeros(shape, dtype=torch.float32)  # (M,)
    if recall is not None and config.final_recall_weight > 0:
        blend += config.final_recall_weight * recall
    if covisited is not None and config.covisit_weight > 0:
        blend += config.covisit_weight * covisited
    if sequential is not None and config.sasrec_weight > 0:
        blend += config.sasrec_weight * sequential
    return blend if bool(blend.any()) else None


def _final_scorer(
    scorer: Callable[[Tensor], Tensor],
    recall_scores: Tensor,
    covisited: Tensor | None,
    config: CascadeConfig,
    sequential: Tensor | None = None,
) -> Callable[[Tensor], Tensor]:
    """The final scorer (RankNet, or the rank order), plus the blend (``_blend``)."""
    blend = _blend(recall_scores, covisited, config, sequential)
    if blend is None:
        return scorer

    def score(features: Tensor) -> Tensor:
        return _standardized(scorer(features)) + blend

    return score


@dataclass
class Shortlist:
    """What the stages before the final placement hand it: DIN's top ``rerank_depth``.

    The final blend (``place``) is cheap next to recall and DIN, so the validation period
    can score many blend weights over one shortlist (``training.evaluation.blend``).
    """

    items: Tensor  # (M,) long item indices, DIN order
    din_scores: Tensor  # (M,) the rank stage's scores (DIN, or recall as its fallback)
    recall_scores: Tensor  # (M,) recall's scores
    covisited: Tensor | None  # (M,) co-visitation scores; None without the channel
    sequential: Tensor | None  # (M,) SASRec scores; None without SASRec or recent items
    features: Tensor | None  # (M, F) RankNet's features; None when RankNet does not serve
    vectors: Tensor | None  # (M, D) item embeddings for RankNet's similarity feature
    reasons: Tensor  # (M,) DIN's top-attention recent item, -1 none
    allowed: Rules  # the business-rule veto
    recent: Tensor  # (L,) the recent items the cascade used, most recent first
    recall_source: str
    rank_source: str


@torch.inference_mode()
def shortlist(
    models: CascadeModels, items: ItemTable, request: CascadeRequest, config: CascadeConfig
) -> Shortlist | None:
    """Recall and rank: DIN's top ``rerank_depth`` with everything the final blend reads;
    None when every item is seen."""
    recent = request.recent_items[: config.max_history]
    # One pass serves both the co-visitation channel and the final blend.
    everywhere = (
        covisit_scores(items, request.recent_items, config)
        if config.covisit_candidates > 0 or config.covisit_weight > 0
        else None
    )  # (I,) or None
    sequential = (
        sasrec_scores(models, request.recent_items)
        if config.sasrec_candidates > 0 or config.sasrec_weight > 0
        else None
    )  # (I,) or None
    candidates, recall_scores, recall_source, query = recall(
        models, items, request, config, everywhere, sequential
    )
    if candidates.numel() == 0:
        return None
    context = din_context(items, candidates, request.user_context)  # (N, C)
    scores, reasons, rank_source = rank(models.din, candidates, recent, context, recall_scores)

    depth = min(config.rerank_depth, candidates.numel())
    top = torch.topk(scores, depth).indices  # (M,) positions among the candidates, DIN order
    picked = candidates[top]  # (M,)
    vectors = models.item_embeddings[picked] if models.item_embeddings is not None else None
    din_scores = scores[top]  # (M,)
    features = None
    # RankNet learned on DIN scores: fed recall scores in their place it would be off its
    # training distribution, so without DIN the rank stage's order stands.
    if models.ranknet is not None and rank_source == "din":
        gcn = vectors @ query if vectors is not None and query is not None else din_scores * 0
        features = rerank_features(
            din_scores,
            gcn,
            items.popularity[picked],
            items.recency[picked],
            items.ctr[picked],
            torch.zeros(depth),
        )  # (M, F)
    return Shortlist(
        items=picked,
        din_scores=din_scores,
        recall_scores=recall_scores[top],
        covisited=everywhere[picked] if everywhere is not None else None,
        sequential=sequential[picked] if sequential is not None else None,
        features=features,
        vectors=vectors,
        reasons=reasons[top],
        allowed=_rules(picked, request.excluded_items, items.categories, config.max_per_category),
        recent=recent,
        recall_source=recall_source,
        rank_source=rank_source,
    )


@torch.inference_mode()
def place(
    models: CascadeModels, short: Shortlist, config: CascadeConfig, k: int
) -> tuple[Tensor, Tensor, str]:
    """The final blend's greedy top k of the shortlist: positions (k',), scores (k',) and
    the source (``ranknet`` or ``rank_order``). Reads only the blend weights of ``config``
    (``final_recall_weight``, ``covisit_weight``, ``sasrec_weight``)."""
    covisited = short.covisited if config.covisit_weight > 0 else None
    sequential = short.sequential if config.sasrec_weight > 0 else None
    ranknet = models.ranknet
    if ranknet is not None and short.features is not None and ranknet.frozen is not None:
        # A served RankNet: the same greedy placement on arrays (``place_greedily``).
        placed, scores = place_greedily(
            ranknet.frozen,
            short.features,
            _blend(short.recall_scores, covisited, config, sequential),
            short.vectors,
            k,
            short.allowed.not_excluded,
            short.allowed.categories,
            short.allowed.max_per_category,
        )
        return placed, scores, "ranknet"
    if ranknet is not None and short.features is not None:
        score_fn = _final_scorer(ranknet, short.recall_scores, covisited, config, sequential)
        placed, scores = greedy_rerank(score_fn, short.features, short.vectors, k, short.allowed)
        return placed, scores, "ranknet"
    din_scores = short.din_scores
    placed, scores = greedy_rerank(
        _final_scorer(
            lambda _features: din_scores, short.recall_scores, covisited, config, sequential
        ),
        torch.zeros(short.items.numel(), len(RERANK_FEATURES)),
        None,
        k,
        short.allowed,
    )
    return placed, scores, "rank_order"


def place_many(
    models: CascadeModels, short: Shortlist, configs: list[CascadeConfig], k: int
) -> list[tuple[Tensor, Tensor, str]]:
    """``place`` of the same shortlist under each of ``configs`` (blend weights), the
    served RankNet's placements side by side (``place_greedily_many``): the prequential
    validation's blend grid."""
    ranknet = models.ranknet
    if ranknet is None or short.features is None or ranknet.frozen is None:
        return [place(models, short, config, k) for config in configs]
    # each source standardized once for every blend
    recall = _standardized(short.recall_scores.float())
    covisited = _standardized(short.covisited.float()) if short.covisited is not None else None
    sequential = _standardized(short.sequential.float()) if short.sequential is not None else None
    blends = [
        _weighted_blend(config, recall, covisited, sequential, short.recall_scores.shape)
        for config in configs
    ]
    placements = place_greedily_many(
        ranknet.frozen,
        short.features,
        blends,
        short.vectors,
        k,
        short.allowed.not_excluded,
        short.allowed.categories,
        short.allowed.max_per_category,
    )
    return [(placed, scores, "ranknet") for placed, scores in placements]


def _sasrec_led(short: Shortlist, placed: Tensor, config: CascadeConfig) -> Tensor:
    """(k',) whether each placed item's weighted standardized SASRec score is above its
    weighted standardized co-visitation score: SASRec, not co-visitation, placed it."""
    assert short.sequential is not None
    sequential = config.sasrec_weight * _standardized(short.sequential.float())[placed]
    covisit = (
        config.covisit_weight * _standardized(short.covisited.float())[placed]
        if short.covisited is not None and config.covisit_weight > 0
        else torch.zeros_like(sequential)
    )
    return sequential > covisit


@torch.inference_mode()
def recommend(
    models: CascadeModels, items: ItemTable, request: CascadeRequest, config: CascadeConfig
) -> CascadeResult:
    short = shortlist(models, items, request, config)
    if short is None:  # everything is seen: an empty list, not an error
        empty = _empty_long()
        recall_source = recall_scores(models, items, request, config)[1]
        return CascadeResult(empty, torch.zeros(0), empty, recall_source, "none", "none")
    placed, placed_scores, rerank_source = place(models, short, config, request.k)
    picks = short.items[placed]
    # The reason: the recent item co-visited most with the pick; else, for a pick SASRec
    # placed (its SASRec term outweighs its co-visitation term), the recent item SASRec
    # ties it to; else DIN's top attention.
    reasons = short.reasons[placed]
    if short.sequential is not None and config.sasrec_weight > 0:
        led = _sasrec_led(short, placed, config)  # (k',) bool
        by_sasrec = sasrec_reasons(models, short.recent, picks)
        reasons = torch.where(led & (by_sasrec >= 0), by_sasrec, reasons)
    covisit_reason = covisit_reasons(items, short.recent, picks, config)
    return CascadeResult(
        items=picks,
        scores=placed_scores,
        reasons=torch.where(covisit_reason >= 0, covisit_reason, reasons),
        recall_source=short.recall_source,
        rank_source=short.rank_source,
        rerank_source=rerank_source,
        rank_scores=short.din_scores[placed],
    )
