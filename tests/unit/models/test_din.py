from __future__ import annotations

import pytest
import torch

from models.din import DIN, DINConfig
from tests.unit.models.planted import (
    CONTEXT_DIM,
    OTHER_CANDIDATES,
    TARGET,
    TRIGGER,
    din_batch,
    train_din,
)


def _history(with_trigger_at: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    history = torch.tensor([12, 20, 33, 9, 15, 27, 0, 0])  # two padded slots at the end
    mask = torch.tensor([True] * 6 + [False] * 2)
    if with_trigger_at is not None:
        history[with_trigger_at] = TRIGGER
    return history, mask


def test_learns_target_clicked_when_trigger_in_history(trained_din) -> None:
    model, losses = trained_din
    assert sum(losses[-10:]) / 10 < 0.2 * sum(losses[:10]) / 10

    candidates = torch.tensor((*OTHER_CANDIDATES, TARGET))
    context = torch.zeros(candidates.numel(), CONTEXT_DIM)
    with torch.no_grad():
        history, mask = _history(with_trigger_at=3)
        logits, attention = model.score_candidates(candidates, history, mask, context)
        assert int(candidates[logits.argmax()]) == TARGET  # the planted item ranks first
        assert int(attention[-1].argmax()) == 3  # and its attention peaks on the trigger
        history, mask = _history(with_trigger_at=None)
        logits, _ = model.score_candidates(candidates, history, mask, context)
        assert torch.sigmoid(logits[-1]) < 0.5  # without the trigger the target is not clicked


def test_held_out_accuracy_on_planted_rule(trained_din) -> None:
    model, _ = trained_din
    batch = din_batch(400, torch.Generator().manual_seed(123))
    with torch.no_grad():
        logits, attention = model(batch.candidates, batch.history, batch.mask, batch.context)
    assert ((logits > 0).float() == batch.labels).float().mean() > 0.95
    clicked = batch.labels == 1
    peak = attention[clicked].argmax(dim=1)  # (P,)
    assert (batch.history[clicked, peak] == TRIGGER).float().mean() > 0.95


def test_padding_is_ignored_and_gets_zero_weight(trained_din) -> None:
    model, _ = trained_din
    history, mask = _history(with_trigger_at=2)
    other = history.clone()
    other[~mask] = TRIGGER  # padding holding the trigger must change nothing
    candidates = torch.tensor([TARGET, 1])
    context = torch.randn(2, CONTEXT_DIM)
    with torch.no_grad():
        logits_a, attention_a = model.score_candidates(candidates, history, mask, context)
        logits_b, attention_b = model.score_candidates(candidates, other, mask, context)
    assert torch.allclose(logits_a, logits_b)
    assert torch.all(attention_a[:, ~mask] == 0) and torch.all(attention_b[:, ~mask] == 0)
    assert torch.all(attention_a[:, mask] > 0)


@pytest.mark.parametrize("activation", ["prelu", "dice"])
def test_batched_scoring_equals_per_candidate_forward(activation: str) -> None:
    torch.manual_seed(0)
    categories = torch.randint(0, 3, (30,))
    config = DINConfig(n_items=30, item_dim=8, n_categories=3, category_dim=4, context_dim=2)
    config.activation = activation
    model = DIN(config, item_categories=categories).eval()
    candidates = torch.arange(10)
    history = torch.randint(0, 30, (7,))
    mask = torch.tensor([True] * 5 + [False] * 2)
    context = torch.randn(10, 2)
    with torch.no_grad():
        logits, attention = model.score_candidates(candidates, history, mask, context)
        for i in range(10):
            one, one_attention = model(
                candidates[i : i + 1], history[None], mask[None], context[i : i + 1]
            )
            assert torch.allclose(logits[i], one[0], atol=1e-5)
            assert torch.allclose(attention[i], one_attention[0], atol=1e-6)
    assert logits.shape == (10,) and attention.shape == (10, 7)


def test_category_embedding_requires_the_item_map() -> None:
    with pytest.raises(ValueError, match="item_categories"):
        DIN(DINConfig(n_items=5, n_categories=2))


def test_dice_variant_trains() -> None:
    _, losses = train_din(steps=60, activation="dice")
    assert sum(losses[-10:]) / 10 < 0.6 * sum(losses[:10]) / 10
