"""The cascade's co-visitation channel: scores, recall, the final blend and the reason."""

from __future__ import annotations

from dataclasses import replace

import torch

from models.cascade import (
    CascadeConfig,
    CascadeModels,
    CascadeRequest,
    Covisits,
    ItemTable,
    covisit_reasons,
    covisit_scores,
    place,
    recall,
    recommend,
    shortlist,
)

N_ITEMS = 8


def _covisits() -> Covisits:
    # 0 and 5 were visited together 4 times, 1 and 6 twice, 1 and 7 once; 2 with no one.
    neighbours = torch.full((N_ITEMS, 2), -1, dtype=torch.long)
    weights = torch.zeros(N_ITEMS, 2)
    pairs = [(0, 5, 4.0), (1, 6, 2.0), (1, 7, 1.0)]
    totals = torch.zeros(N_ITEMS)
    for a, b, w in pairs:
        for x, y in ((a, b), (b, a)):
            slot = int((neighbours[x] >= 0).sum())
            neighbours[x, slot], weights[x, slot] = y, w
            totals[x] += w
    return Covisits(neighbours, weights, totals)


def _items(covisits: Covisits | None) -> ItemTable:
    return ItemTable(
        popularity=torch.linspace(1.0, 0.0, N_ITEMS),  # item 0 most popular
        recency=torch.full((N_ITEMS,), 0.5),
        ctr=torch.full((N_ITEMS,), 0.1),
        covisits=covisits,
    )


def test_scores_are_recency_weighted_cosines_of_the_recent_items() -> None:
    config = CascadeConfig(covisit_decay=0.5)
    scores = covisit_scores(_items(_covisits()), torch.tensor([1, 0]), config)
    assert scores is not None
    # 1 is most recent (weight 1): 6 gets 2 / sqrt(3 * 2), 7 gets 1 / sqrt(3 * 1);
    # 0 comes next (weight 0.5): 5 gets 0.5 * 4 / sqrt(4 * 4)
    expected = torch.zeros(N_ITEMS)
    expected[6] = 2 / (3 * 2) ** 0.5
    expected[7] = 1 / (3 * 1) ** 0.5
    expected[5] = 0.5
    assert torch.allclose(scores, expected)
    assert covisit_scores(_items(None), torch.tensor([1]), config) is None
    assert covisit_scores(_items(_covisits()), torch.tensor([], dtype=torch.long), config) is None


def test_recall_takes_the_covisited_items_first_and_never_seen_ones() -> None:
    prior = torch.linspace(1.0, 0.0, N_ITEMS)  # item 0 first for a user without vectors
    models = CascadeModels(item_prior=prior)
    config = CascadeConfig(n_candidates=3, covisit_candidates=2)
    request = CascadeRequest(recent_items=torch.tensor([1]), seen_items=torch.tensor([1, 7]))
    candidates, _, source, _ = recall(models, _items(_covisits()), request, config)
    # 6 by co-visitation (7 is seen), then the prior's best: 0 and 2
    assert set(candidates.tolist()) == {6, 0, 2}
    assert source == "cold_start"
    without = recall(models, _items(None), request, config)[0]
    assert set(without.tolist()) == {0, 2, 3}


def test_the_blend_moves_covisited_items_up_and_names_the_recent_item_as_the_reason() -> None:
    prior = torch.linspace(1.0, 0.0, N_ITEMS)
    models = CascadeModels(item_prior=prior)
    request = CascadeRequest(
        recent_items=torch.tensor([1, 0]), seen_items=torch.tensor([1, 0]), k=3
    )
    plain = recommend(models, _items(_covisits()), request, CascadeConfig(n_candidates=6))
    assert plain.items.tolist() == [2, 3, 4]  # the prior's order
    config = CascadeConfig(n_candidates=6, covisit_candidates=3, covisit_weight=5.0)
    blended = recommend(models, _items(_covisits()), request, config)
    # 5: 0.9 * 4 / 4 = 0.9 (from 0), 6: 2 / sqrt(6) = 0.82, 7: 1 / sqrt(3) = 0.58 (from 1)
    assert blended.items.tolist() == [5, 6, 7]
    assert blended.reasons.tolist() == [0, 1, 1]


def test_the_reason_is_the_recent_item_that_added_most() -> None:
    config = CascadeConfig(covisit_decay=1.0)
    reasons = covisit_reasons(
        _items(_covisits()), torch.tensor([0, 1]), torch.tensor([5, 6, 2]), config
    )
    assert reasons.tolist() == [0, 1, -1]


def test_one_shortlist_placed_with_each_blend_is_what_recommend_serves_with_it() -> None:
    prior = torch.linspace(1.0, 0.0, N_ITEMS)
    models = CascadeModels(item_prior=prior)
    request = CascadeRequest(
        recent_items=torch.tensor([1, 0]), seen_items=torch.tensor([1, 0]), k=3
    )
    base = CascadeConfig(n_candidates=6, covisit_candidates=3)
    # Any co-visitation weight makes the shortlist carry the scores the blends weigh.
    short = shortlist(models, _items(_covisits()), request, replace(base, covisit_weight=1.0))
    assert short is not None and short.covisited is not None
    placements = []
    for weight in (0.0, 0.1, 5.0):
        config = replace(base, covisit_weight=weight)
        placed, _, _ = place(models, short, config, request.k)
        served = recommend(models, _items(_covisits()), request, config)
        assert short.items[placed].tolist() == served.items.tolist()
        placements.append(served.items.tolist())
    assert placements[0] != placements[-1]  # the weight matters on this shortlist
    everything = CascadeRequest(recent_items=torch.tensor([0]), seen_items=torch.arange(N_ITEMS))
    assert shortlist(models, _items(_covisits()), everything, base) is None
