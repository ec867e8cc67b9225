from __future__ import annotations

import dataclasses

import pytest
import torch

from models.cascade import (
    CascadeConfig,
    CascadeModels,
    CascadeRequest,
    ItemTable,
    place,
    place_many,
    recall,
    recommend,
    shortlist,
    user_vector,
)
from models.din import DIN, DINConfig
from models.ranknet import RERANK_FEATURES, RankNet, RankNetConfig
from tests.unit.models.planted import N_ITEMS, TARGET, TRIGGER

# Item i points along axis i // 10 (four groups of ten), plus a little noise; item 12 is
# item 15's co-clicked twin. Popularity falls with the index, so item 0 is the most popular.
DIM = 4


def _item_embeddings() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    vectors = torch.eye(DIM)[torch.arange(N_ITEMS) // 10] + 0.1 * torch.randn(
        N_ITEMS, DIM, generator=generator
    )
    vectors[12] = 1.5 * vectors[15]  # same direction, stronger: what co-clicks train
    return vectors  # (I, D)


def _items(categories: torch.Tensor | None = None) -> ItemTable:
    return ItemTable(
        popularity=torch.linspace(1.0, 0.0, N_ITEMS),
        recency=torch.full((N_ITEMS,), 0.5),
        ctr=torch.full((N_ITEMS,), 0.1),
        categories=categories,
    )


def _request(**overrides: object) -> CascadeRequest:
    fields: dict[str, object] = {
        "recent_items": torch.tensor([], dtype=torch.long),
        "user_context": torch.tensor([0.3]),  # 3 item-side + 1 user-side = DIN context_dim 4
        "k": 5,
    }
    fields.update(overrides)
    return CascadeRequest(**fields)  # type: ignore[arg-type]


def _random_din() -> DIN:
    torch.manual_seed(0)
    return DIN(DINConfig(n_items=N_ITEMS, item_dim=8, context_dim=4, attention_hidden=8)).eval()


@pytest.mark.parametrize("variant", ["none", "embeddings", "din", "all"])
def test_seen_and_excluded_items_are_never_returned(variant: str) -> None:
    torch.manual_seed(0)
    user_emb = torch.randn(3, DIM)
    models = CascadeModels()
    if variant != "none":
        models = CascadeModels(user_emb, _item_embeddings())
    if variant in ("din", "all"):
        models.din = _random_din()
    if variant == "all":
        models.ranknet = RankNet(RankNetConfig()).eval()
    config = CascadeConfig(n_candidates=20, rerank_depth=12)
    for trial in range(5):
        seen = torch.randperm(N_ITEMS)[:15]
        excluded = torch.randperm(N_ITEMS)[:5]
        request = _request(
            recent_items=seen[:4], seen_items=seen, excluded_items=excluded, user_index=trial % 3
        )
        result = recommend(models, _items(), request, config)
        returned = set(result.items.tolist())
        assert len(result.items) == 5 and len(returned) == 5
        assert not returned & set(seen.tolist())
        assert not returned & set(excluded.tolist())


def test_everything_seen_gives_an_empty_list() -> None:
    request = _request(seen_items=torch.arange(N_ITEMS))
    result = recommend(CascadeModels(), _items(), request, CascadeConfig())
    assert result.items.numel() == 0


def test_a_new_click_moves_recall_at_once() -> None:
    user_emb = torch.eye(DIM)[:1] * 3  # the trained user looks only at group 0
    models = CascadeModels(user_embeddings=user_emb, item_embeddings=_item_embeddings())
    config = CascadeConfig(n_candidates=6, recent_weight=0.5)
    before = _request(user_index=0)
    after = _request(user_index=0, recent_items=torch.tensor([15]), seen_items=torch.tensor([15]))
    vector_before = user_vector(models, before, config)
    vector_after = user_vector(models, after, config)
    assert vector_before is not None and vector_after is not None
    assert not torch.allclose(vector_before, vector_after)

    candidates_before, _, source, _ = recall(models, _items(), before, config)
    candidates_after, _, _, _ = recall(models, _items(), after, config)
    assert source == "lightgcn"
    assert set(candidates_before.tolist()) <= set(range(10))  # all from the user's own group
    assert 12 not in candidates_before.tolist()
    assert 12 in candidates_after.tolist()  # the clicked item's twin enters the candidates
    assert 15 not in candidates_after.tolist()  # the click itself is now seen


def test_a_new_user_gets_recall_from_recent_items_only() -> None:
    models = CascadeModels(user_embeddings=torch.eye(DIM)[:1], item_embeddings=_item_embeddings())
    config = CascadeConfig(n_candidates=3)
    request = _request(recent_items=torch.tensor([15]), seen_items=torch.tensor([15]))
    candidates, _, source, _ = recall(models, _items(), request, config)
    assert source == "lightgcn"
    assert int(candidates[0]) == 12
    cold = recall(models, _items(), _request(), config)
    assert cold[2] == "popularity" and cold[0].tolist() == [0, 1, 2]


def test_every_stage_falls_back_when_its_model_is_missing() -> None:
    config = CascadeConfig(n_candidates=20, rerank_depth=10)
    seen = torch.tensor([0, 2])
    request = _request(recent_items=torch.tensor([3]), seen_items=seen, user_index=0)

    nothing = recommend(CascadeModels(), _items(), request, config)
    assert nothing.items.tolist() == [1, 3, 4, 5, 6]  # popularity minus the seen items
    assert (nothing.recall_source, nothing.rank_source, nothing.rerank_source) == (
        "popularity",
        "recall",
        "rank_order",
    )
    assert torch.all(nothing.reasons == -1)

    item_emb = _item_embeddings()
    user_emb = torch.randn(1, DIM, generator=torch.Generator().manual_seed(3))
    recall_only = recommend(CascadeModels(user_emb, item_emb), _items(), request, config)
    query = user_vector(CascadeModels(user_emb, item_emb), request, config)
    assert query is not None
    expected = (item_emb @ query).index_fill(0, seen, float("-inf")).topk(5).indices
    assert recall_only.items.tolist() == expected.tolist()

    ranknet = RankNet(RankNetConfig()).eval()
    no_din = recommend(
        CascadeModels(user_emb, item_emb, ranknet=ranknet), _items(), request, config
    )
    assert no_din.rerank_source == "rank_order"  # RankNet is not fed recall scores as DIN's
    assert torch.equal(no_din.items, recall_only.items)

    din = _random_din()
    din_only = recommend(CascadeModels(user_emb, item_emb, din=din), _items(), request, config)
    assert din_only.rank_source == "din" and din_only.rerank_source == "rank_order"
    assert torch.all(din_only.scores[:-1] >= din_only.scores[1:])  # DIN's order, descending


def _least_popular_first() -> RankNet:
    ranknet = RankNet(RankNetConfig(hidden=())).eval()  # one Linear: a readable scorer
    layer = ranknet.mlp[0]
    assert isinstance(layer, torch.nn.Linear)
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.zero_()
        layer.weight[0, RERANK_FEATURES.index("popularity")] = -1.0
    return ranknet


def test_ranknet_reorders_the_shortlist() -> None:
    config = CascadeConfig(n_candidates=20, rerank_depth=8)
    models = CascadeModels(None, None, din=_random_din(), ranknet=_least_popular_first())
    result = recommend(models, _items(), _request(), config)
    assert result.rerank_source == "ranknet"
    plain = recommend(CascadeModels(None, None, din=_random_din()), _items(), _request(), config)
    popularity = _items().popularity
    assert torch.all(popularity[result.items][:-1] <= popularity[result.items][1:])
    assert not torch.all(popularity[plain.items][:-1] <= popularity[plain.items][1:])


def test_diversity_rule_caps_each_category_in_the_top_k() -> None:
    categories = torch.zeros(N_ITEMS, dtype=torch.long)
    categories[20:] = 1  # the 20 most popular items share category 0
    categories[30:] = 2
    config = CascadeConfig(n_candidates=N_ITEMS, rerank_depth=N_ITEMS, max_per_category=2)
    result = recommend(CascadeModels(), _items(categories), _request(k=6), config)
    assert len(result.items) == 6
    counts = torch.bincount(categories[result.items], minlength=3)
    assert counts.tolist() == [2, 2, 2]
    assert result.items.tolist() == [0, 1, 20, 21, 30, 31]  # best allowed, in order

    unconstrained = recommend(CascadeModels(), _items(categories), _request(k=6), CascadeConfig())
    assert torch.bincount(categories[unconstrained.items], minlength=3)[0] == 6


def test_reason_names_the_planted_behaviour(trained_din) -> None:
    din, _ = trained_din
    recent = torch.tensor([12, 20, TRIGGER, 33])
    request = _request(recent_items=recent, seen_items=recent, k=3)
    config = CascadeConfig(n_candidates=N_ITEMS, rerank_depth=20)
    result = recommend(CascadeModels(din=din), _items(), request, config)
    assert result.rank_source == "din"
    assert int(result.items[0]) == TARGET
    assert int(result.reasons[0]) == TRIGGER
    assert set(result.reasons.tolist()) <= set(recent.tolist())


def test_the_trend_channel_adds_recent_popular_items_lightgcn_misses() -> None:
    # Recent items all in group 3 (items 30..39): LightGCN's top 10 is group 3, while the
    # most popular items are 0, 1, 2 (popularity falls with the index).
    request = _request(recent_items=torch.tensor([31, 32]), seen_items=torch.tensor([31, 32, 1]))
    models = CascadeModels(None, _item_embeddings())
    plain, _, _, _ = recall(models, _items(), request, CascadeConfig(n_candidates=10))
    assert not {0, 2} & set(plain.tolist())
    mixed, scores, source, _ = recall(
        models, _items(), request, CascadeConfig(n_candidates=10, trend_candidates=2)
    )
    assert source == "lightgcn" and len(mixed) == 10 and len(set(mixed.tolist())) == 10
    assert {0, 2} <= set(mixed.tolist())  # the top trend items that were not seen
    assert 1 not in set(mixed.tolist())  # seen items stay out of every channel
    assert set(plain.tolist()[:8]) <= set(mixed.tolist())  # the rest is LightGCN's best
    assert torch.all(scores[:-1] >= scores[1:])  # ordered by the recall score


def test_a_user_without_history_is_recalled_by_the_sets_prior() -> None:
    prior = torch.zeros(N_ITEMS)
    prior[[7, 3, 30]] = torch.tensor([3.0, 2.0, 1.0])  # not the live popularity order
    models = CascadeModels(torch.eye(DIM)[:1], _item_embeddings(), item_prior=prior)
    candidates, _, source, query = recall(
        models, _items(), _request(), CascadeConfig(n_candidates=3)
    )
    assert source == "cold_start" and query is None
    assert candidates.tolist() == [7, 3, 30]


def test_the_prior_weight_moves_a_known_users_recall_toward_the_prior() -> None:
    user_emb = torch.eye(DIM)[:1] * 3  # the trained user looks only at group 0 (items 0-9)
    prior = torch.zeros(N_ITEMS)
    prior[35] = 10.0  # one item far from the user's taste, very popular lately
    models = CascadeModels(user_emb, _item_embeddings(), item_prior=prior)
    request = _request(user_index=0)
    unweighted, _, source, _ = recall(models, _items(), request, CascadeConfig(n_candidates=5))
    weighted, _, _, _ = recall(
        models, _items(), request, CascadeConfig(n_candidates=5, prior_weight=2.0)
    )
    assert source == "lightgcn"
    assert 35 not in unweighted.tolist()
    assert int(weighted[0]) == 35
    assert set(weighted[1:].tolist()) <= set(range(10))  # the rest still follow the user


def test_the_standardised_prior_is_held_until_the_prior_is_replaced() -> None:
    user_emb = torch.eye(DIM)[:1] * 3
    prior = torch.zeros(N_ITEMS)
    prior[35] = 10.0
    models = CascadeModels(user_emb, _item_embeddings(), item_prior=prior)
    request, config = _request(user_index=0), CascadeConfig(n_candidates=5, prior_weight=2.0)
    held = models.standardized_prior()
    assert held is not None and held is models.standardized_prior()  # computed once
    assert torch.equal(held, (prior - prior.mean()) / prior.std())
    assert int(recall(models, _items(), request, config)[0][0]) == 35
    # Another prior (a set reloaded, a test's replace) is standardised afresh: recall follows.
    moved = torch.zeros(N_ITEMS)
    moved[25] = 10.0
    models.item_prior = moved
    assert int(recall(models, _items(), request, config)[0][0]) == 25
    models.item_prior = None
    assert models.standardized_prior() is None


def test_the_final_recall_weight_lets_recall_overrule_ranknet_where_it_is_sure() -> None:
    prior = torch.zeros(N_ITEMS)
    prior[:8] = 1.0  # recall (a cold start) shortlists items 0..7 by the prior
    prior[[4, 2]] = torch.tensor([10.0, 9.0])  # recall is sure of these two, RankNet is not
    models = CascadeModels(None, None, _random_din(), _least_popular_first(), item_prior=prior)
    request = _request(k=8)
    unweighted = recommend(models, _items(), request, CascadeConfig(n_candidates=8, rerank_depth=8))
    weighted = recommend(
        models,
        _items(),
        request,
        CascadeConfig(n_candidates=8, rerank_depth=8, final_recall_weight=2.0),
    )
    assert unweighted.rerank_source == weighted.rerank_source == "ranknet"
    assert unweighted.items.tolist() == [7, 6, 5, 4, 3, 2, 1, 0]  # RankNet alone
    assert weighted.items.tolist()[:2] == [4, 2]
    assert weighted.items.tolist()[2:] == [7, 6, 5, 3, 1, 0]  # recall's ties: RankNet's order
    assert torch.all(weighted.scores[:-1] >= weighted.scores[1:])


def test_placing_a_grid_of_blends_at_once_places_each_blend_as_place() -> None:
    """The prequential validation's blend grid: ``place_many`` of one shortlist under every
    blend gives ``place``'s positions for each, with the served (frozen) RankNet."""
    torch.manual_seed(3)
    ranknet = RankNet(RankNetConfig()).eval()
    ranknet.freeze_for_placement()
    models = CascadeModels(
        user_embeddings=torch.randn(3, DIM),
        item_embeddings=_item_embeddings(),
        din=_random_din(),
        ranknet=ranknet,
    )
    categories = torch.arange(N_ITEMS) % 3
    config = CascadeConfig(n_candidates=30, rerank_depth=20, max_per_category=2)
    request = _request(
        user_index=1, recent_items=torch.tensor([3, 14]), seen_items=torch.tensor([3, 14]), k=6
    )
    short = shortlist(models, _items(categories), request, config)
    assert short is not None and short.features is not None
    configs = [
        dataclasses.replace(config, final_recall_weight=recall) for recall in (0.0, 0.5, 2.0, 16.0)
    ]
    many = place_many(models, short, configs, request.k)
    want = [place(models, short, blend, request.k) for blend in configs]
    assert [p.tolist() for p, _, _ in many] == [p.tolist() for p, _, _ in want]
    assert [source for _, _, source in many] == ["ranknet"] * len(configs)
    for (_, got, _), (_, expected, _) in zip(many, want, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert len({tuple(p.tolist()) for p, _, _ in many}) > 1  # the weights do move the list
