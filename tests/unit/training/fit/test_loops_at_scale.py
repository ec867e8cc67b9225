"""The loops at a large log's scale: SASRec's sampled softmax, and the epochs that stop
growing with the log (LightGCN's batch instead of its steps, DIN's examples, RankNet's
lists, SASRec's windows). Small logs, below every cap, train as they did."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

import training.fit.loops as loops
from models.sasrec import PAD, Sasrec, SasrecConfig
from training.data.examples import DINExamples
from training.fit.hyper import DINHyper, LightGCNHyper, RankNetHyper
from training.fit.loops import (
    Parallel,
    train_din,
    train_lightgcn,
    train_ranknet,
    train_sasrec,
)

N_ITEMS = 12
CHAIN = 6  # items 0..5 follow each other in a cycle


def _chains(users: int = 60) -> list[list[int]]:
    generator = torch.Generator().manual_seed(0)
    starts = torch.randint(CHAIN, (users,), generator=generator).tolist()
    return [[(start + step) % CHAIN for step in range(8)] for start in starts]


@pytest.fixture
def steps(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts the gradient steps the loops take (every loop steps through ``descend``)."""
    taken: list[int] = []
    descend = loops.descend

    def counted(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> float:
        taken.append(1)
        return descend(optimizer, loss)

    monkeypatch.setattr(loops, "descend", counted)
    yield taken


def _model(dropout: float = 0.0) -> Sasrec:
    torch.manual_seed(0)
    return Sasrec(N_ITEMS, SasrecConfig(max_length=5, hidden=8, blocks=1, dropout=dropout))


def _windows() -> tuple[torch.Tensor, torch.Tensor]:
    inputs = torch.tensor([[0, 0, 1, 2, 3], [0, 4, 5, 6, 7], [0, 0, 0, 9, 10]])
    targets = torch.tensor([[0, 0, 2, 3, 4], [0, 5, 6, 7, 8], [0, 0, 0, 10, 11]])
    return inputs, targets


def test_the_sampled_softmax_over_every_item_is_the_full_softmax() -> None:
    model = _model()
    inputs, targets = _windows()
    full = model.next_item_loss(inputs, targets)
    every_item = torch.randperm(N_ITEMS, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(model.next_item_loss(inputs, targets, every_item), full, atol=1e-6)
    # padding positions are not scored: the loss is the mean over the 8 real targets
    states = model(inputs)[targets != PAD]
    expected = F.cross_entropy(model.item_logits(states), targets[targets != PAD] - 1)
    assert torch.allclose(full, expected, atol=1e-6)


def test_a_sampled_item_equal_to_the_target_is_left_out() -> None:
    model = _model()
    inputs = torch.tensor([[0, 0, 0, 1, 2]])
    targets = torch.tensor([[0, 0, 0, 2, 3]])  # vocabulary targets 1 and 2
    sampled = torch.tensor([2, 7, 9])  # 2 is the second position's target
    states = model(inputs)[targets != PAD]  # (2, D)
    table = model.items.weight[1:]
    logits = states @ table.T  # (2, I)
    first = F.cross_entropy(logits[0, [1, 2, 7, 9]].unsqueeze(0), torch.tensor([0]))
    second = F.cross_entropy(logits[1, [2, 7, 9]].unsqueeze(0), torch.tensor([0]))
    loss = model.next_item_loss(inputs, targets, sampled)
    assert torch.allclose(loss, (first + second) / 2, atol=1e-6)


def test_the_chain_is_learned_with_sampled_negatives(
    steps: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn: list[int] = []
    loss = Sasrec.next_item_loss

    def spied(model: Sasrec, *args: torch.Tensor | None) -> torch.Tensor:
        sampled = args[2] if len(args) > 2 else None
        drawn.append(-1 if sampled is None else int(sampled.unique().numel()))
        return loss(model, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Sasrec, "next_item_loss", spied)
    config = SasrecConfig(
        max_length=5, hidden=16, blocks=1, dropout=0.0, lr=1e-2, max_epochs=8, negatives=4
    )
    model, _ = train_sasrec(N_ITEMS, _chains(), config)  # 12 items > 4: sampled
    assert set(drawn) == {4}  # every step's softmax over 4 distinct drawn items
    scores = model.next_scores([[1, 2, 3], [4, 5, 0]])
    assert [int(row.argmax()) for row in scores] == [4, 1]
    assert len(steps) == 8 * 2  # 60 sequences of 8 cut into 120 windows: 2 batches of 64


def test_an_epoch_of_sasrec_is_at_most_its_windows(steps: list[int]) -> None:
    config = SasrecConfig(
        max_length=5, hidden=8, blocks=1, max_epochs=3, batch_size=10, max_windows_per_epoch=25
    )
    train_sasrec(N_ITEMS, _chains(), config)  # 120 windows
    assert len(steps) == 3 * 3  # 25 windows: batches of 10, 10, 5
    steps.clear()
    train_sasrec(N_ITEMS, _chains(), replace(config, max_epochs=30, max_windows=60))
    assert len(steps) == 2 * 3  # 60 windows in all: two epochs of 25


def test_lightgcn_grows_its_batch_instead_of_its_steps(steps: list[int]) -> None:
    generator = torch.Generator().manual_seed(0)
    users = torch.randint(0, 30, (1000,), generator=generator)
    items = torch.randint(0, 20, (1000,), generator=generator)
    times = torch.arange(1000)

    def fit(hyper: LightGCNHyper) -> int:
        steps.clear()
        train_lightgcn(30, 20, users, items, times, 1000, hyper, 0, Parallel())
        return len(steps)

    assert fit(LightGCNHyper(dim=4, epochs=2, batch_size=64, max_steps_per_epoch=100)) == 2 * 15
    assert fit(LightGCNHyper(dim=4, epochs=2, batch_size=64, max_steps_per_epoch=5)) == 2 * 5


def _din_examples(n: int) -> DINExamples:
    generator = torch.Generator().manual_seed(0)
    return DINExamples(
        lookup=torch.arange(n),
        history=torch.randint(1, 20, (n, 4), generator=generator),
        history_mask=torch.ones(n, 4, dtype=torch.bool),
        candidate=torch.randint(0, 20, (n,), generator=generator),
        context=torch.rand(n, 5, generator=generator),
        label=(torch.rand(n, generator=generator) < 0.5).float(),
        user=torch.zeros(n, dtype=torch.long),
        time=torch.arange(n),
    )


def test_an_epoch_of_din_is_at_most_its_examples(steps: list[int]) -> None:
    examples, categories = _din_examples(500), torch.zeros(20, dtype=torch.long)
    small = DINHyper(item_dim=4, category_dim=2, attention_hidden=4, mlp_hidden=(4,), batch_size=50)
    train_din(examples, 20, categories, 0, small, 0, Parallel())
    assert len(steps) == 2 * 10
    steps.clear()
    capped = replace(small, max_examples_per_epoch=120)
    train_din(examples, 20, categories, 0, capped, 0, Parallel())
    assert len(steps) == 2 * 2  # 120 examples: two full batches of 50


def test_an_epoch_of_ranknet_is_at_most_its_lists(steps: list[int]) -> None:
    generator = torch.Generator().manual_seed(0)
    features = torch.rand(200, 6, 5, generator=generator)
    labels = (torch.rand(200, 6, generator=generator) < 0.3).float()
    mask = torch.ones(200, 6, dtype=torch.bool)
    train_ranknet(features, labels, mask, RankNetHyper(epochs=2, batch_size=20), 0, Parallel())
    assert len(steps) == 2 * 10
    steps.clear()
    capped = RankNetHyper(epochs=2, batch_size=20, max_lists_per_epoch=50)
    train_ranknet(features, labels, mask, capped, 0, Parallel())
    assert len(steps) == 2 * 2  # 50 lists: batches of 20 and 20 (the loop drops the rest)
