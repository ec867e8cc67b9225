"""The cascade's SASRec channel: recall of the next item, the blend term, weight 0, reasons."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from models.cascade import (
    CascadeConfig,
    CascadeModels,
    CascadeRequest,
    Covisits,
    ItemTable,
    place,
    recall,
    recommend,
    sasrec_reasons,
    sasrec_scores,
    shortlist,
)
from models.sasrec import Sasrec, SasrecConfig
from training.fit.loops import train_sasrec

N_ITEMS = 12
CHAIN = 6  # items 0..5 follow each other in a cycle; 6..11 are never visited in order


def _chains(users: int = 60) -> list[list[int]]:
    """Every user walks the cycle 0 -> 1 -> ... -> 5 -> 0 from a random start."""
    generator = torch.Generator().manual_seed(0)
    sequences = []
    for _ in range(users):
        start = int(torch.randint(CHAIN, (1,), generator=generator))
        sequences.append([(start + step) % CHAIN for step in range(8)])
    return sequences


@pytest.fixture(scope="module")
def chain_model() -> Sasrec:
    config = SasrecConfig(max_length=5, hidden=16, blocks=1, dropout=0.0, lr=1e-2, max_epochs=8)
    model, _ = train_sasrec(N_ITEMS, _chains(), config)
    return model


def _covisits() -> Covisits:
    """Symmetric pairs that do not hold the chain's order: 3 with 9, 2 with 10, 1 with 11."""
    neighbours = torch.full((N_ITEMS, 1), -1, dtype=torch.long)
    weights = torch.zeros(N_ITEMS, 1)
    for a, b in ((3, 9), (2, 10), (1, 11)):
        neighbours[a, 0], neighbours[b, 0] = b, a
        weights[a, 0] = weights[b, 0] = 5.0
    return Covisits(neighbours, weights, weights.sum(1))


def _items() -> ItemTable:
    return ItemTable(
        popularity=torch.linspace(0.0, 1.0, N_ITEMS),  # the chain is the least popular
        recency=torch.full((N_ITEMS,), 0.5),
        ctr=torch.full((N_ITEMS,), 0.1),
        covisits=_covisits(),
    )


def _request() -> CascadeRequest:
    # the user walked 1 -> 2 -> 3 (most recent first): the chain's next item is 4
    recent = torch.tensor([3, 2, 1])
    return CascadeRequest(recent_items=recent, seen_items=recent, k=3)


def test_sasrec_scores_read_the_recent_items_oldest_first(chain_model: Sasrec) -> None:
    scores = sasrec_scores(CascadeModels(sasrec=chain_model), torch.tensor([3, 2, 1]))
    assert scores is not None and scores.shape == (N_ITEMS,)
    assert int(scores.argmax()) == 4
    expected = chain_model.next_scores([[1, 2, 3]])[0]
    assert torch.allclose(scores, torch.from_numpy(expected), atol=1e-5)
    assert sasrec_scores(CascadeModels(), torch.tensor([3])) is None
    assert sasrec_scores(CascadeModels(sasrec=chain_model), torch.zeros(0).long()) is None


def test_the_channel_recalls_the_next_item_co_visitation_misses(chain_model: Sasrec) -> None:
    models = CascadeModels(item_prior=torch.linspace(0.0, 1.0, N_ITEMS), sasrec=chain_model)
    config = CascadeConfig(n_candidates=4, covisit_candidates=3, trend_candidates=0)
    request = _request()
    sequential = sasrec_scores(models, request.recent_items)
    without, *_ = recall(models, _items(), request, config)
    assert 4 not in without.tolist()  # co-visitation: 9, 10, 11; the prior: 8
    with_channel, *_ = recall(
        models, _items(), request, replace(config, sasrec_candidates=1), sequential=sequential
    )
    assert 4 in with_channel.tolist()
    assert {9, 10, 11} <= set(with_channel.tolist())  # co-visitation kept its share


def test_the_blend_term_puts_the_next_item_first_and_names_a_recent_item(
    chain_model: Sasrec,
) -> None:
    models = CascadeModels(item_prior=torch.linspace(0.0, 1.0, N_ITEMS), sasrec=chain_model)
    config = CascadeConfig(
        n_candidates=6, covisit_candidates=3, sasrec_candidates=2, covisit_weight=1.0
    )
    result = recommend(models, _items(), _request(), replace(config, sasrec_weight=4.0))
    assert int(result.items[0]) == 4
    assert int(result.reasons[0]) in {1, 2, 3}
    before = recommend(models, _items(), _request(), config)
    assert int(before.items[0]) != 4


def test_weight_zero_and_no_channel_place_exactly_as_without_sasrec(chain_model: Sasrec) -> None:
    items = _items()
    config = CascadeConfig(n_candidates=8, covisit_candidates=3, covisit_weight=2.0)
    without = recommend(CascadeModels(item_prior=torch.linspace(0, 1, N_ITEMS)), items,
                        _request(), config)  # fmt: skip
    models = CascadeModels(item_prior=torch.linspace(0, 1, N_ITEMS), sasrec=chain_model)
    with_model = recommend(models, items, _request(), config)
    assert torch.equal(with_model.items, without.items)
    assert torch.equal(with_model.scores, without.scores)
    assert torch.equal(with_model.reasons, without.reasons)
    # one shortlist carrying SASRec's scores, placed with weight 0: today's placement
    short = shortlist(models, items, _request(), replace(config, sasrec_weight=1.0))
    assert short is not None and short.sequential is not None
    placed, scores, _ = place(models, short, config, 3)
    bare, bare_scores, _ = place(models, replace(short, sequential=None), config, 3)
    assert torch.equal(placed, bare) and torch.equal(scores, bare_scores)


def test_a_pick_sasrec_placed_names_the_recent_item_closest_to_it(chain_model: Sasrec) -> None:
    model = copy.deepcopy(chain_model)
    with torch.no_grad():  # row index + 1 is the item: item 7 now points where item 2 does
        model.items.weight[1 + 7] = 3.0 * model.items.weight[1 + 2]
        model.items.weight[1 + 8] = -model.items.weight[1 + 2]
    models = CascadeModels(sasrec=model)
    recent = torch.tensor([3, 2, 1])
    reasons = sasrec_reasons(models, recent, torch.tensor([7, 2]))
    assert reasons.tolist() == [2, 2]
    assert int(sasrec_reasons(models, recent, torch.tensor([8]))) != 2  # the farthest, never
    assert sasrec_reasons(CascadeModels(), recent, torch.tensor([7])).tolist() == [-1]
    # In the cascade: the next item (4) is co-visited with nothing and there is no DIN, so
    # its reason can only be SASRec's, and it is exactly the rule's.
    full = CascadeModels(item_prior=torch.linspace(0.0, 1.0, N_ITEMS), sasrec=chain_model)
    config = CascadeConfig(
        n_candidates=6, covisit_candidates=3, sasrec_candidates=2, covisit_weight=1.0,
        sasrec_weight=4.0,
    )  # fmt: skip
    result = recommend(full, _items(), _request(), config)
    assert int(result.items[0]) == 4
    expected = sasrec_reasons(full, _request().recent_items, torch.tensor([4]))
    assert int(result.reasons[0]) == int(expected[0])


def test_affinity_is_the_cosine_of_the_item_embeddings(chain_model: Sasrec) -> None:
    """Computed on the gathered rows only; the definition normalises the whole table."""
    table = torch.nn.functional.normalize(chain_model.items.weight[1:].detach(), dim=-1)
    recent, picks = torch.tensor([3, 0, 7, 3]), torch.tensor([1, 2, 7])
    got = chain_model.affinity(recent, picks)
    assert got.shape == (4, 3)
    assert torch.allclose(got, table[recent] @ table[picks].T, atol=1e-6)
    assert got[2, 2] == pytest.approx(1.0)  # an item with itself
