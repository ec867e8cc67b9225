from __future__ import annotations

import math

import pytest
import torch

from models.cascade import Rules
from models.ranknet import (
    RERANK_FEATURES,
    SIMILARITY_COLUMN,
    FrozenMlp,
    RankNet,
    RankNetConfig,
    greedy_rerank,
    place_greedily,
    place_greedily_many,
    ranknet_loss,
    rerank_features,
    similarity_to_above,
)


def test_loss_matches_hand_computation_and_ignores_ties_and_padding() -> None:
    scores = torch.tensor([[2.0, 0.5, 9.0, 1.0]])
    labels = torch.tensor([[2.0, 1.0, 0.0, 1.0]])
    mask = torch.tensor([[True, True, False, True]])  # the 9.0 is padding
    # pairs: (0 over 1), (0 over 3); (1, 3) tie; anything with 2 is padded
    expected = (math.log1p(math.exp(-1.5)) + math.log1p(math.exp(-1.0))) / 2
    assert math.isclose(ranknet_loss(scores, labels, mask).item(), expected, rel_tol=1e-6)


def test_loss_without_pairs_is_zero_with_a_graph() -> None:
    scores = torch.randn(2, 3, requires_grad=True)
    loss = ranknet_loss(scores, torch.ones(2, 3), torch.ones(2, 3, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()  # must not raise


def test_learns_to_order_by_the_planted_feature() -> None:
    torch.manual_seed(0)
    batch, n = 64, 12
    model = RankNet(RankNetConfig())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)

    def make_lists() -> tuple[torch.Tensor, torch.Tensor]:
        features = torch.randn(batch, n, len(RERANK_FEATURES))  # (B, N, F)
        planted = features[..., 4].contiguous()  # the "ctr" column decides the graded label
        labels = torch.bucketize(planted, torch.tensor([-0.5, 0.5, 1.2])).float()  # 0..3
        return features, labels

    mask = torch.ones(batch, n, dtype=torch.bool)
    mask[:, -2:] = False  # ragged lists
    losses = []
    for _ in range(200):
        features, labels = make_lists()
        loss = ranknet_loss(model(features), labels, mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.4 * sum(losses[:10]) / 10

    features, labels = make_lists()
    features, labels = features[:, :-2], labels[:, :-2]  # evaluate on the real candidates
    with torch.no_grad():
        scores = model(features)  # (B, N')
    top_label = labels.gather(1, scores.argmax(dim=1, keepdim=True)).squeeze(1)
    assert torch.equal(top_label, labels.max(dim=1).values)  # a best-graded item ranks first
    ordered = labels[:, :, None] > labels[:, None, :]  # pairs the labels order
    agree = (scores[:, :, None] > scores[:, None, :])[ordered]
    assert agree.float().mean() > 0.97


def test_similarity_to_above_follows_the_given_order() -> None:
    vectors = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [0.0, -1.0]])
    sims = similarity_to_above(vectors, order=torch.tensor([1, 0, 2, 3]))
    assert sims[1] == 0  # placed first
    assert torch.isclose(sims[0], torch.tensor(0.0))  # orthogonal to item 1
    assert sims[2] > 0.99  # nearly parallel to item 0, placed above it
    assert torch.isclose(sims[3], torch.tensor(0.0), atol=1e-6)  # best of -1, 0, ~-0.1


def test_greedy_rerank_recomputes_similarity_at_each_step() -> None:
    # a scorer that prefers high base score and penalizes similarity to what is placed
    def score(features: torch.Tensor) -> torch.Tensor:
        return features[:, 0] - 2.0 * features[:, SIMILARITY_COLUMN]

    base = torch.zeros(3, len(RERANK_FEATURES))
    base[:, 0] = torch.tensor([1.0, 0.9, 0.5])
    vectors = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # 1 duplicates 0
    placed, scores = greedy_rerank(score, base, vectors, k=3)
    assert placed.tolist() == [0, 2, 1]  # the duplicate drops below the dissimilar item
    assert torch.allclose(scores, torch.tensor([1.0, 0.5, 0.9 - 2.0]))

    plain, _ = greedy_rerank(score, base, None, k=3)
    assert plain.tolist() == [0, 1, 2]


def test_greedy_rerank_honours_the_veto_and_stops_when_nothing_is_allowed() -> None:
    base = torch.zeros(4, len(RERANK_FEATURES))
    base[:, 0] = torch.tensor([4.0, 3.0, 2.0, 1.0])
    vetoed = torch.tensor([False, True, False, True])
    placed, _ = greedy_rerank(lambda f: f[:, 0], base, None, k=4, allowed_fn=lambda _: ~vetoed)
    assert placed.tolist() == [0, 2]


def _standardized(values: torch.Tensor) -> torch.Tensor:
    if values.numel() < 2:  # torch's std of one value is nan (and a warning)
        return values - values.mean()
    std = values.std()
    return (values - values.mean()) / std if float(std) > 0 else values - values.mean()


@pytest.mark.parametrize(
    ("n", "k", "blended", "vectors", "cap"),
    [
        (250, 10, True, True, 3),  # the served shape: DIN's top 250, blend, rule
        (40, 10, False, True, 0),  # RankNet's own scores, no rule
        (12, 10, True, False, 2),  # no item vectors: the similarity column stays 0
        (5, 10, True, True, 1),  # the rule runs out of candidates before k
        (1, 10, True, True, 0),  # one candidate: nothing to standardize against
    ],
)
def test_place_greedily_places_as_greedy_rerank_with_the_served_scorer(
    n: int, k: int, blended: bool, vectors: bool, cap: int
) -> None:
    torch.manual_seed(n)
    model = RankNet(RankNetConfig()).eval()
    frozen = FrozenMlp.of(model)
    model.trace_for_serving()  # the served model is the trace; the arrays copy the weights
    features = torch.randn(n, len(RERANK_FEATURES))
    blend = torch.randn(n) if blended else None
    item_vectors = torch.randn(n, 8) if vectors else None
    not_excluded = torch.rand(n) > 0.2
    categories = torch.randint(0, 4, (n,))
    rules = Rules(not_excluded, categories if cap else None, cap)

    def scorer(f: torch.Tensor) -> torch.Tensor:
        return _standardized(model(f)) + blend if blend is not None else model(f)

    with torch.inference_mode():
        want, want_scores = greedy_rerank(scorer, features, item_vectors, k, rules)
    got, got_scores = place_greedily(
        frozen, features, blend, item_vectors, k, not_excluded, categories if cap else None, cap
    )
    assert got.tolist() == want.tolist()
    assert len(got) == min(k, int(not_excluded.sum())) or cap > 0
    torch.testing.assert_close(got_scores, want_scores, rtol=1e-5, atol=1e-5)
    if cap:
        placed_categories = categories[got].tolist()
        assert max(placed_categories.count(c) for c in set(placed_categories)) <= cap


@pytest.mark.parametrize(
    ("n", "k", "vectors", "cap"),
    [
        (250, 10, True, 3),  # the validation's shape: DIN's top 250, the rule
        (40, 10, True, 0),
        (12, 10, False, 2),  # no item vectors
        (5, 10, True, 1),  # the rule runs out of candidates before k
        (1, 10, True, 0),  # one candidate
    ],
)
def test_placing_many_blends_at_once_places_each_as_place_greedily(
    n: int, k: int, vectors: bool, cap: int
) -> None:
    torch.manual_seed(n)
    frozen = FrozenMlp.of(RankNet(RankNetConfig()).eval())
    features = torch.randn(n, len(RERANK_FEATURES))
    # blends of every kind, one of them none (RankNet's own scores)
    blends: list[torch.Tensor | None] = [torch.randn(n) * scale for scale in (0.1, 1.0, 10.0)]
    blends.insert(1, None)
    item_vectors = torch.randn(n, 8) if vectors else None
    not_excluded = torch.rand(n) > 0.2
    # any codes, negative ones too: counted apart
    categories = torch.randint(-2, 2, (n,)) * 7 if cap else None

    many = place_greedily_many(
        frozen, features, blends, item_vectors, k, not_excluded, categories, cap
    )
    assert len(many) == len(blends)
    orders = set()
    for blend, (got, got_scores) in zip(blends, many, strict=True):
        want, want_scores = place_greedily(
            frozen, features, blend, item_vectors, k, not_excluded, categories, cap
        )
        assert got.tolist() == want.tolist()
        assert got.dtype == want.dtype == torch.long
        torch.testing.assert_close(got_scores, want_scores, rtol=1e-5, atol=1e-5)
        orders.add(tuple(got.tolist()))
    # the blends do place differently: the rows are not one placement copied
    assert len(orders) > 1 or n <= 2 or int(not_excluded.sum()) <= 1


def test_blends_that_place_alike_for_some_steps_each_place_as_place_greedily() -> None:
    # A grid like the validation's: many blends, some the same, most close to another, so
    # rows share their first placements and part at different steps (the scores of a
    # shared placement are computed once and handed to every row that has it).
    torch.manual_seed(7)
    n, k = 250, 10
    frozen = FrozenMlp.of(RankNet(RankNetConfig()).eval())
    features = torch.randn(n, len(RERANK_FEATURES))
    base = torch.randn(n)
    blends: list[torch.Tensor | None] = [base * w + torch.randn(n) * 0.05 * w for w in range(8)]
    blends += [blends[3], None, blends[5], None]
    item_vectors = torch.randn(n, 8)
    not_excluded = torch.rand(n) > 0.1
    categories = torch.randint(0, 5, (n,))

    many = place_greedily_many(
        frozen, features, blends, item_vectors, k, not_excluded, categories, 3
    )
    firsts = set()
    for blend, (got, got_scores) in zip(blends, many, strict=True):
        want, want_scores = place_greedily(
            frozen, features, blend, item_vectors, k, not_excluded, categories, 3
        )
        assert got.tolist() == want.tolist()
        torch.testing.assert_close(got_scores, want_scores, rtol=1e-5, atol=1e-5)
        firsts.add(tuple(got[:3].tolist()))
    placements = {tuple(got.tolist()) for got, _ in many}
    # some rows share a beginning, and not every row is the same placement
    assert len(firsts) < len(blends) and len(placements) > 1


def test_frozen_weights_refuse_an_mlp_that_is_not_plain_linear_layers() -> None:
    model = RankNet(RankNetConfig())
    model.mlp = torch.nn.Sequential(torch.nn.Linear(len(RERANK_FEATURES), 1))
    with pytest.raises(ValueError, match="1 linear layers"):
        FrozenMlp.of(model)


def test_rerank_features_column_order() -> None:
    columns = [torch.full((3,), float(i)) for i in range(len(RERANK_FEATURES))]
    features = rerank_features(*columns)
    assert features.shape == (3, len(RERANK_FEATURES))
    assert torch.equal(features[0], torch.arange(len(RERANK_FEATURES), dtype=torch.float32))
