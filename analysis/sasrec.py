"""SASRec (Kang & McAuley 2018): causal self-attention over a user's item sequence.

The strongest standard next-item recommender to hold against the live item-kNN on the
prequential protocol (:mod:`analysis.sequential_headroom`). A study model, not a served
stage: it lives in ``analysis`` and is trained and scored there.

The one departure from the paper: the loss is the full softmax over the vocabulary
(cross-entropy on every position's next item) instead of one sampled negative with binary
cross-entropy. With a vocabulary of a few thousand items the full softmax costs little and
is the stronger objective (Klenitskiy & Vasilev 2023, "Turning dross into gold loss").
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

PAD = 0  # item index 0 is padding; vocabulary item i is token i + 1


@dataclass(frozen=True)
class SasrecConfig:
    max_length: int = 50  # the items a user's sequence holds: the worker keeps 50 recent items
    hidden: int = 64  # embedding and attention width
    blocks: int = 2  # self-attention blocks
    heads: int = 1  # the paper's single head
    dropout: float = 0.2  # on embeddings, attention and feed-forward
    lr: float = 2e-3
    weight_decay: float = 0.0
    batch_size: int = 64  # MovieLens-100K's training period cuts into ~2,000 windows of 50
    max_epochs: int = 30  # an upper bound: early stopping on validation decides
    patience: int = 4  # epochs without a better validation figure before stopping
    seed: int = 0


class Sasrec(nn.Module):
    """Item embeddings (tied with the output layer) + learned positions, pre-norm blocks."""

    def __init__(self, n_items: int, config: SasrecConfig) -> None:
        super().__init__()
        self.config = config
        self.n_items = n_items
        self.items = nn.Embedding(n_items + 1, config.hidden, padding_idx=PAD)
        # Positions count back from the newest item (sequences are left-padded), so the item
        # a prediction follows always sits at the same position, in training and serving.
        self.positions = nn.Embedding(config.max_length, config.hidden)
        self.dropout = nn.Dropout(config.dropout)
        layer = nn.TransformerEncoderLayer(
            config.hidden,
            config.heads,
            dim_feedforward=config.hidden,
            dropout=config.dropout,
            activation="relu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, config.blocks, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.hidden)
        # Small embeddings (GPT-2's 0.02): with the default N(0, 1) the tied output layer
        # starts with logits of spread ~hidden, far from the uniform softmax, and learns slowly.
        for table in (self.items, self.positions):
            nn.init.normal_(table.weight, std=0.02)
        with torch.no_grad():
            self.items.weight[PAD].zero_()

    def forward(self, sequences: torch.Tensor) -> torch.Tensor:
        """(B, L) tokens, left-padded with PAD -> (B, L, D) states; position t sees <= t."""
        batch, length = sequences.shape
        valid = sequences != PAD  # (B, L)
        positions = torch.arange(length, device=sequences.device)  # (L,)
        x = self.items(sequences) * self.config.hidden**0.5 + self.positions(positions)
        x = self.dropout(x) * valid.unsqueeze(-1)  # (B, L, D)
        causal = torch.ones(length, length, dtype=torch.bool, device=sequences.device).tril()
        # a query may read a key at or before it that is an item; a padding query reads
        # itself only, so no row of the attention is empty (an empty row is NaN)
        allowed = causal & (valid.unsqueeze(1) | torch.eye(length, dtype=torch.bool))  # (B,L,L)
        mask = (~allowed).repeat_interleave(self.config.heads, dim=0)  # (B*heads, L, L)
        return self.norm(self.encoder(x, mask=mask))  # (B, L, D)

    def item_logits(self, states: torch.Tensor) -> torch.Tensor:
        """(..., D) states -> (..., I) logits of every vocabulary item (padding left out)."""
        return states @ self.items.weight[1:].T

    @torch.no_grad()
    def next_scores(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        """(B, I) scores of every vocabulary item as the next one after each history
        (vocabulary indices, oldest first, non-empty)."""
        self.eval()
        tokens = left_padded(histories, self.config.max_length)  # (B, L)
        states = self(tokens)[:, -1]  # (B, D)
        return self.item_logits(states).numpy()


def left_padded(histories: Sequence[Sequence[int]], length: int) -> torch.Tensor:
    """(B, length) tokens: each history's last ``length`` items (index + 1), left-padded."""
    tokens = torch.zeros(len(histories), length, dtype=torch.long)
    for row, history in enumerate(histories):
        kept = list(history)[-length:]
        if kept:
            tokens[row, length - len(kept) :] = torch.tensor(kept) + 1
    return tokens


def training_windows(
    sequences: Sequence[Sequence[int]], length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-item targets (both (W, length) tokens, PAD where none) cut from
    each sequence (vocabulary indices, oldest first) from its end back, so every item
    but the first of a sequence is a target exactly once."""
    inputs: list[list[int]] = []
    targets: list[list[int]] = []
    for sequence in sequences:
        end = len(sequence)
        while end >= 2:
            start = max(0, end - length - 1)
            chunk = list(sequence[start:end])
            inputs.append(chunk[:-1])
            targets.append(chunk[1:])
            end = start + 1  # the next window's last target is this window's first input
    return left_padded(inputs, length), left_padded(targets, length)


def train(
    n_items: int,
    sequences: Sequence[Sequence[int]],
    config: SasrecConfig,
    validate: Callable[[Sasrec], float],
) -> tuple[Sasrec, list[float]]:
    """Fit on every next item of ``sequences``; after each epoch ``validate`` scores the
    model (higher is better) and the best epoch's weights are kept (early stopping with
    ``patience``). Returns the model and the validation figure of every epoch."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model = Sasrec(n_items, config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    inputs, targets = training_windows(sequences, config.max_length)
    loss_fn = nn.CrossEntropyLoss(ignore_index=-1)
    history: list[float] = []
    best: tuple[float, dict[str, torch.Tensor]] | None = None
    for _ in range(config.max_epochs):
        model.train()
        order = torch.randperm(len(inputs), generator=generator)
        for start in range(0, len(order), config.batch_size):
            batch = order[start : start + config.batch_size]
            logits = model.item_logits(model(inputs[batch]))  # (B, L, I)
            labels = targets[batch] - 1  # PAD -> -1, ignored
            loss = loss_fn(logits.reshape(-1, n_items), labels.reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        figure = validate(model)
        history.append(figure)
        log.info("epoch %d: loss %.4f, validation %.4f", len(history), loss.item(), figure)
        if best is None or figure > best[0]:
            best = (figure, {k: v.clone() for k, v in model.state_dict().items()})
        elif len(history) - 1 - int(np.argmax(history)) >= config.patience:
            break
    assert best is not None  # max_epochs >= 1
    model.load_state_dict(best[1])
    model.eval()
    return model, history
