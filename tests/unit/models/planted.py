"""Small planted patterns the model tests train on: seeded, CPU-fast, no files."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from models.din import DIN, DINConfig

# DIN's planted rule: candidate TARGET is clicked exactly when TRIGGER is in the history.
TARGET = 0
TRIGGER = 7
OTHER_CANDIDATES = (1, 2, 3, 4)
N_ITEMS = 40
HISTORY_LEN = 10
CONTEXT_DIM = 4


@dataclass
class DINBatch:
    candidates: Tensor  # (B,)
    history: Tensor  # (B, L)
    mask: Tensor  # (B, L)
    context: Tensor  # (B, C)
    labels: Tensor  # (B,)


def din_batch(n: int, generator: torch.Generator) -> DINBatch:
    """Histories from items 5..N_ITEMS-1, TRIGGER in about half of them, random padding."""
    pool = torch.arange(5, N_ITEMS)
    history = torch.stack(
        [pool[torch.randperm(pool.numel(), generator=generator)[:HISTORY_LEN]] for _ in range(n)]
    )  # (B, L) distinct items per row
    lengths = torch.randint(3, HISTORY_LEN + 1, (n,), generator=generator)
    mask = torch.arange(HISTORY_LEN).unsqueeze(0) < lengths.unsqueeze(1)  # (B, L)
    with_trigger = torch.rand(n, generator=generator) < 0.5
    slot = (torch.rand(n, generator=generator) * lengths).long()  # a real position per row
    history[with_trigger, slot[with_trigger]] = TRIGGER
    history[~with_trigger] = torch.where(
        history[~with_trigger] == TRIGGER, torch.tensor(5), history[~with_trigger]
    )
    has_trigger = ((history == TRIGGER) & mask).any(1)
    choices = torch.tensor((TARGET, TARGET, TARGET, *OTHER_CANDIDATES))
    candidates = choices[torch.randint(0, choices.numel(), (n,), generator=generator)]
    labels = ((candidates == TARGET) & has_trigger).float()
    context = torch.randn(n, CONTEXT_DIM, generator=generator)
    return DINBatch(candidates, history, mask, context, labels)


def train_din(steps: int = 150, activation: str = "prelu") -> tuple[DIN, list[float]]:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = DIN(
        DINConfig(
            n_items=N_ITEMS,
            item_dim=16,
            context_dim=CONTEXT_DIM,
            attention_hidden=16,
            mlp_hidden=(32, 16),
            activation=activation,
        )
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(steps):
        batch = din_batch(128, generator)
        logits, _ = model(batch.candidates, batch.history, batch.mask, batch.context)
        loss = F.binary_cross_entropy_with_logits(logits, batch.labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return model, losses
