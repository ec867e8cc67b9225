"""The training loops of the four models of a set, single-process or one DDP rank each.

Every loop is deterministic for a seed: the model is initialised after
``torch.manual_seed(seed)`` and all sampling goes through one ``torch.Generator`` seeded
from it, the same on every rank. Data-parallel runs draw the same global batch on every
rank and each rank takes its own slice (:meth:`Parallel.shard`), so every rank runs the
same number of steps; DistributedDataParallel averages the gradients, so every rank ends
with the same weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.din import DIN, DINConfig
from models.lightgcn import LightGCN, LightGCNConfig, normalized_adjacency
from models.ranknet import RankNet, RankNetConfig, ranknet_loss
from models.sasrec import Sasrec, SasrecConfig, left_padded
from training.data.examples import DINExamples
from training.fit.hyper import DINHyper, LightGCNHyper, RankNetHyper

DAY_MS = 24 * 3600 * 1000
EpochHook = Callable[[str, int, dict[str, float]], None]  # (stage, epoch, metrics)
Validate = Callable[[nn.Module], dict[str, float]]


@dataclass(frozen=True)
class Parallel:
    """How a loop runs: a single process (default) or one rank of a DDP group."""

    rank: int = 0
    world_size: int = 1

    def wrap(self, model: nn.Module) -> nn.Module:
        """DDP(model) when data-parallel (the process group must already exist)."""
        if self.world_size <= 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model)

    def shard(self, indices: Tensor) -> Tensor:
        """This rank's slice of a global batch; equal sizes on every rank."""
        if self.world_size <= 1:
            return indices
        usable = indices.numel() - indices.numel() % self.world_size
        return indices[:usable][self.rank :: self.world_size]


def descend(optimizer: torch.optim.Optimizer, loss: Tensor) -> float:
    """One gradient step on ``loss``; its value."""
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return float(loss.item())


def _generator(seed: int, salt: int) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(seed * 1_000_003 + salt)
    return generator


def recency_weights(times: Tensor, end_ms: int, half_life_days: float, mix: float) -> Tensor:
    """(E,) sampling probabilities: ``mix`` decayed by age (half-life), the rest uniform."""
    age = (end_ms - times.double()).clamp(min=0) / DAY_MS
    decayed = torch.pow(2.0, -age / half_life_days) if half_life_days > 0 else torch.ones_like(age)
    uniform = torch.full_like(decayed, 1.0 / max(times.numel(), 1))
    return (mix * decayed / decayed.sum() + (1 - mix) * uniform).float()


def train_lightgcn(
    n_users: int,
    n_items: int,
    users: Tensor,
    items: Tensor,
    times: Tensor,
    end_ms: int,
    hyper: LightGCNHyper,
    seed: int,
    parallel: Parallel,
    on_epoch: EpochHook | None = None,
    validate: Validate | None = None,
) -> tuple[LightGCN, Tensor, list[dict[str, float]]]:
    """BPR over the training edges, positives drawn with recency weights.

    Returns the model, the normalized adjacency it propagates over, and per-epoch metrics.
    """
    torch.manual_seed(seed)
    config = LightGCNConfig(
        n_users=n_users,
        n_items=n_items,
        dim=hyper.dim,
        layers=hyper.layers,
        reg_weight=hyper.reg_weight,
    )
    model = LightGCN(config)
    adj = normalized_adjacency(users, items, n_users, n_items)
    wrapped = parallel.wrap(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=hyper.lr)
    weights = recency_weights(times, end_ms, hyper.recency_half_life_days, hyper.recency_mix)
    generator = _generator(seed, 1)
    # a step propagates the whole graph, whatever the batch: a larger log gets larger
    # batches, not more steps (MovieLens-100K: 19 steps of 4,096; 1M events: 20 of 40,000)
    batch = max(hyper.batch_size, -(-users.numel() // hyper.max_steps_per_epoch))
    steps = max(1, users.numel() // batch)
    history: list[dict[str, float]] = []
    for epoch in range(hyper.epochs):
        model.train()
        total = 0.0
        for _ in range(steps):
            chosen = torch.multinomial(weights, batch, replacement=True, generator=generator)
            negatives = torch.randint(0, n_items, (batch,), generator=generator)
            mine = parallel.shard(torch.arange(batch))
            loss, bpr = wrapped(adj, users[chosen][mine], items[chosen][mine], negatives[mine])
            descend(optimizer, loss)
            total += bpr.item()
        metrics = {"loss": total / steps}
        if validate is not None:
            model.eval()
            metrics.update(validate(model))
        history.append(metrics)
        if on_epoch is not None:
            on_epoch("lightgcn", epoch, metrics)
    model.eval()
    return model, adj, history


def din_config(hyper: DINHyper, n_items: int, n_categories: int, context_dim: int) -> DINConfig:
    return DINConfig(
        n_items=n_items,
        item_dim=hyper.item_dim,
        n_categories=n_categories,
        category_dim=hyper.category_dim,
        context_dim=context_dim,
        attention_hidden=hyper.attention_hidden,
        mlp_hidden=tuple(hyper.mlp_hidden),
        activation=hyper.activation,
    )


def train_din(
    examples: DINExamples,
    n_items: int,
    categories: Tensor,
    n_categories: int,
    hyper: DINHyper,
    seed: int,
    parallel: Parallel,
    on_epoch: EpochHook | None = None,
    validate: Validate | None = None,
) -> tuple[DIN, list[dict[str, float]]]:
    """Binary cross-entropy on point-in-time positives and sampled negatives."""
    torch.manual_seed(seed + 1)
    config = din_config(hyper, n_items, n_categories, int(examples.context.shape[1]))
    model = DIN(config, item_categories=categories if n_categories > 0 else None)
    wrapped = parallel.wrap(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=hyper.lr, weight_decay=hyper.weight_decay)
    generator = _generator(seed, 2)
    batch = hyper.batch_size
    history: list[dict[str, float]] = []
    for epoch in range(hyper.epochs):
        model.train()
        order = torch.randperm(len(examples), generator=generator)
        order = order[: hyper.max_examples_per_epoch]
        total, steps = 0.0, 0
        for start in range(0, order.numel() - batch + 1, batch):
            rows = parallel.shard(order[start : start + batch])
            lookups = examples.lookup[rows]
            logits, _ = wrapped(
                examples.candidate[rows],
                examples.history[lookups],
                examples.history_mask[lookups],
                examples.context[rows],
            )
            loss = F.binary_cross_entropy_with_logits(logits, examples.label[rows])
            total += descend(optimizer, loss)
            steps += 1
        metrics = {"loss": total / max(steps, 1)}
        if validate is not None:
            model.eval()
            metrics.update(validate(model))
        history.append(metrics)
        if on_epoch is not None:
            on_epoch("din", epoch, metrics)
    model.eval()
    return model, history


def train_ranknet(
    features: Tensor,
    labels: Tensor,
    mask: Tensor,
    hyper: RankNetHyper,
    seed: int,
    parallel: Parallel,
    on_epoch: EpochHook | None = None,
) -> tuple[RankNet, list[dict[str, float]]]:
    """Pairwise logistic loss on candidate lists: features (B, M, F), labels/mask (B, M)."""
    torch.manual_seed(seed + 2)
    config = RankNetConfig(
        n_features=int(features.shape[-1]),
        hidden=tuple(hyper.hidden),
        sigma=hyper.sigma,
    )
    model = RankNet(config)
    wrapped = parallel.wrap(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=hyper.lr, weight_decay=hyper.weight_decay)
    generator = _generator(seed, 3)
    batch = hyper.batch_size
    history: list[dict[str, float]] = []
    for epoch in range(hyper.epochs):
        model.train()
        order = torch.randperm(features.shape[0], generator=generator)[: hyper.max_lists_per_epoch]
        total, steps = 0.0, 0
        for start in range(0, max(order.numel() - batch, 0) + 1, batch):
            rows = parallel.shard(order[start : start + batch])
            scores = wrapped(features[rows])
            loss = ranknet_loss(scores, labels[rows], mask[rows], config.sigma)
            total += descend(optimizer, loss)
            steps += 1
        metrics = {"loss": total / max(steps, 1)}
        history.append(metrics)
        if on_epoch is not None:
            on_epoch("ranknet", epoch, metrics)
    model.eval()
    return model, history


def training_windows(sequences: Sequence[Sequence[int]], length: int) -> tuple[Tensor, Tensor]:
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


class _NextItemLoss(nn.Module):
    """SASRec's loss as a module's forward, so DistributedDataParallel syncs its gradients."""

    def __init__(self, model: Sasrec) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: Tensor, targets: Tensor, sampled: Tensor | None) -> Tensor:
        return self.model.next_item_loss(inputs, targets, sampled)


def train_sasrec(
    n_items: int,
    sequences: Sequence[Sequence[int]],
    config: SasrecConfig,
    validate: Callable[[Sasrec], float] | None = None,
    parallel: Parallel = Parallel(),  # noqa: B008 - frozen, so a shared default is safe
    on_epoch: EpochHook | None = None,
    stage: str = "sasrec",
) -> tuple[Sasrec, list[dict[str, float]]]:
    """Next-item loss on every position of ``sequences`` (full softmax, or sampled above
    ``config.negatives`` items; an epoch at most ``config.max_windows_per_epoch`` windows),
    ``config.max_epochs`` epochs and ``config.max_windows`` windows at most. With
    ``validate`` (higher is better), each epoch is scored and the best epoch's weights are
    kept, stopping after ``config.patience`` epochs without a better figure (every rank
    computes the same figure, so every rank stops together)."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model = Sasrec(n_items, config)
    wrapped = parallel.wrap(_NextItemLoss(model))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    inputs, targets = training_windows(sequences, config.max_length)
    history: list[dict[str, float]] = []
    best: tuple[float, dict[str, Tensor]] | None = None
    sample = n_items > config.negatives
    per_epoch = max(1, min(len(inputs), config.max_windows_per_epoch))
    for epoch in range(min(config.max_epochs, max(1, config.max_windows // per_epoch))):
        model.train()
        order = torch.randperm(len(inputs), generator=generator)[: config.max_windows_per_epoch]
        total, steps = 0.0, 0
        for start in range(0, len(order), config.batch_size):
            rows = parallel.shard(order[start : start + config.batch_size])
            if rows.numel() == 0:
                continue
            sampled = (
                torch.randperm(n_items, generator=generator)[: config.negatives] if sample else None
            )
            loss = wrapped(inputs[rows], targets[rows], sampled)
            total += descend(optimizer, loss)
            steps += 1
        metrics = {"loss": total / max(steps, 1)}
        if validate is not None:
            metrics["validation_ndcg_at_10"] = validate(model)
        history.append(metrics)
        if on_epoch is not None:
            on_epoch(stage, epoch, metrics)
        if validate is None:
            continue
        figures = [h["validation_ndcg_at_10"] for h in history]
        if best is None or figures[-1] > best[0]:
            best = (figures[-1], {k: v.clone() for k, v in model.state_dict().items()})
        elif len(figures) - 1 - int(np.argmax(figures)) >= config.patience:
            break
    if best is not None:
        model.load_state_dict(best[1])
    model.eval()
    return model, history
