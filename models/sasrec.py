"""SASRec (Kang & McAuley 2018): causal self-attention over a user's item sequence.

The cascade's next-item stage (``models.cascade``: a recall channel and a term of the
final blend); trained by ``training.fit.loops.train_sasrec``, studied against the live
item-kNN in :mod:`analysis.sequential_headroom`.

The one departure from the paper: the loss is the full softmax over the vocabulary
(cross-entropy on every position's next item) instead of one sampled negative with binary
cross-entropy. With a vocabulary of a few thousand items the full softmax costs little and
is the stronger objective (Klenitskiy & Vasilev 2023, "Turning dross into gold loss").
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

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
    # Training at scale (MovieLens-100K's ~2,000 windows and 1,616 items use neither): an
    # epoch is at most this many windows (a seeded sample), so a large log is scored by
    # early stopping more often than once per pass; with a vocabulary larger than
    # ``negatives`` the softmax runs over the target and that many items drawn uniformly
    # (the same for the whole batch) instead of all items: at 46k items the full softmax
    # is ~90 % of a step.
    max_windows_per_epoch: int = 16_384
    negatives: int = 4096
    # and at most this many windows in all (MovieLens: 30 epochs of ~1,800, under it); on
    # the 1M-event log the tail's figure was within 3 % of its best after 5 epochs of
    # 16,384 and kept creeping by noise to epoch 12, then the refit repeated as many; at
    # 131,072 (8 tail epochs and a refit of 5, 300 s) `streamrec train` took 27 minutes
    # there, so 4 epochs of 16,384 (docs/design.md, "The mission's scale")
    max_windows: int = 65_536
    seed: int = 0


def model_fields(config: SasrecConfig) -> dict[str, int | float]:
    """What the module's shape needs (the rest of the config says how it was fitted)."""
    return {
        "max_length": config.max_length,
        "hidden": config.hidden,
        "blocks": config.blocks,
        "heads": config.heads,
        "dropout": config.dropout,
    }


class Sasrec(nn.Module):
    """Item embeddings (tied with the output layer) + learned positions, pre-norm blocks."""

    # ``next_logits``'s forward pass as a TorchScript trace (``trace_for_serving``); None: eager
    _traced_forward: Callable[[torch.Tensor], torch.Tensor] | None = None

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

    def next_item_loss(
        self, inputs: torch.Tensor, targets: torch.Tensor, sampled: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Cross-entropy of every position's next item: inputs and targets (B, L) tokens,
        PAD where there is no target. Only the positions with a target are scored (short
        sequences' windows are mostly padding: at 1M events 78 % of the positions).

        Over the whole vocabulary, or with ``sampled`` (K,) vocabulary indices drawn
        uniformly, over the target and those K (a sampled item equal to the target left
        out): uniform draws need no correction of the logits, their log-probability being
        the same for every item."""
        states = self(inputs)[targets != PAD]  # (N, D)
        labels = targets[targets != PAD] - 1  # (N,) vocabulary indices
        if sampled is None:
            return nn.functional.cross_entropy(self.item_logits(states), labels)
        table = self.items.weight[1:]  # (I, D)
        positive = (states * table[labels]).sum(-1, keepdim=True)  # (N, 1)
        negative = states @ table[sampled].T  # (N, K)
        negative = negative.masked_fill(sampled.unsqueeze(0) == labels.unsqueeze(1), -torch.inf)
        logits = torch.cat([positive, negative], dim=1)  # the target is class 0
        return nn.functional.cross_entropy(logits, torch.zeros_like(labels))

    @torch.no_grad()
    def next_logits(self, history: torch.Tensor) -> torch.Tensor:
        """(I,) scores of every vocabulary item as the next one after ``history`` (L,)
        (vocabulary indices, oldest first, non-empty; the last ``max_length`` count)."""
        if self.training:  # eval() walks every submodule: a quarter of a served call
            self.eval()
        kept = history[-self.config.max_length :]  # (L',)
        tokens = torch.cat([torch.zeros(self.config.max_length - kept.numel()), kept + 1])
        forward = self._traced_forward or self
        states = forward(tokens.long().unsqueeze(0))[0, -1]  # (D,)
        return self.item_logits(states)  # (I,)

    def trace_for_serving(self) -> None:
        """Run ``next_logits``'s forward pass, always of shape (1, max_length), as its
        TorchScript trace: the same arithmetic without the encoder layers' Python dispatch,
        which is about half of its time per request (``bench/cascade_latency.py``).
        ``forward`` itself stays eager (training, ``next_scores``), the state dict keeps
        its keys, and the model is left in eval mode, as ``next_logits`` runs it."""
        self.eval()
        example = torch.zeros(1, self.config.max_length, dtype=torch.long)
        example[0, -1] = 1
        with torch.no_grad(), warnings.catch_warnings():
            # The trace keeps the example's shape; next_logits never passes another one.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", FutureWarning)  # see RankNet.trace_for_serving
            traced = torch.jit.trace(self, example)
        self._traced_forward = traced.forward  # a function, not a submodule

    @torch.no_grad()
    def next_scores(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        """(B, I) scores of every vocabulary item as the next one after each history
        (vocabulary indices, oldest first, non-empty)."""
        self.eval()
        tokens = left_padded(histories, self.config.max_length)  # (B, L)
        states = self(tokens)[:, -1]  # (B, D)
        return self.item_logits(states).numpy()

    @torch.no_grad()
    def affinity(self, recent: torch.Tensor, picks: torch.Tensor) -> torch.Tensor:
        """(R, P) cosine of the item embeddings of ``recent`` (R,) and ``picks`` (P,).

        Only those rows are normalised: the whole table was 1.6 ms of a request at 47k items.
        """
        table = self.items.weight[1:]  # (I, D)
        normalize = nn.functional.normalize
        return normalize(table[recent], dim=-1) @ normalize(table[picks], dim=-1).T


def left_padded(histories: Sequence[Sequence[int]], length: int) -> torch.Tensor:
    """(B, length) tokens: each history's last ``length`` items (index + 1), left-padded."""
    tokens = torch.zeros(len(histories), length, dtype=torch.long)
    for row, history in enumerate(histories):
        kept = list(history)[-length:]
        if kept:
            tokens[row, length - len(kept) :] = torch.tensor(kept) + 1
    return tokens
