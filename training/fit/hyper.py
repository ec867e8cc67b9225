"""The training hyper-parameters, typed, with one default each, validated when read.

A model's shape (embedding widths, layers, hidden sizes) has its default in the model's
own config (``models/*.py``); the fields here that describe a shape take that default, so
the two cannot disagree. The rest says how a stage is fitted. ``Hyper.read`` takes the
JSON overrides of ``streamrec train --hyper`` (or a ``Hyper``) and refuses unknown names
and out-of-range values before any work starts. Why each default was chosen, with the
measurements behind it, is in ``docs/tuning.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, field, replace
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

from models.cascade import CascadeConfig
from models.din import DINConfig
from models.lightgcn import LightGCNConfig
from models.ranknet import RankNetConfig
from models.sasrec import SasrecConfig

PositiveInt = Annotated[int, Field(gt=0)]
Count = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
Share = Annotated[float, Field(ge=0, le=1)]


@dataclass(frozen=True)
class LightGCNHyper:
    dim: PositiveInt = LightGCNConfig.dim
    layers: PositiveInt = LightGCNConfig.layers
    reg_weight: NonNegativeFloat = LightGCNConfig.reg_weight
    lr: NonNegativeFloat = 0.01
    # 10, not 20: the served cascade as good or better with half the propagations
    # (docs/tuning.md, "LightGCN's epochs")
    epochs: Count = 10
    batch_size: PositiveInt = 4096
    # BPR positives are drawn with weight mix * 2^(-age / half-life) + (1 - mix), so the
    # item embeddings carry what is popular near the cutoff
    recency_half_life_days: PositiveFloat = 10.0
    recency_mix: Share = 0.9
    # an epoch is at most this many steps: beyond batch_size * steps edges the batch grows
    max_steps_per_epoch: PositiveInt = 20


@dataclass(frozen=True)
class DINHyper:
    item_dim: PositiveInt = DINConfig.item_dim
    category_dim: PositiveInt = DINConfig.category_dim
    attention_hidden: PositiveInt = DINConfig.attention_hidden
    mlp_hidden: tuple[int, ...] = DINConfig.mlp_hidden
    activation: Literal["prelu", "dice"] = "prelu"
    lr: NonNegativeFloat = 2e-3
    weight_decay: NonNegativeFloat = 0.0
    epochs: Count = 2
    batch_size: PositiveInt = 2048
    # an epoch is at most this many examples, a seeded sample (MovieLens-100K has 320k)
    max_examples_per_epoch: PositiveInt = 1_000_000


@dataclass(frozen=True)
class RankNetHyper:
    hidden: tuple[int, ...] = RankNetConfig.hidden
    sigma: PositiveFloat = RankNetConfig.sigma
    lr: NonNegativeFloat = 3e-3
    weight_decay: NonNegativeFloat = 1e-4
    epochs: Count = 60
    batch_size: PositiveInt = 64
    # an epoch is at most this many lists, a seeded sample (MovieLens-100K has ~140)
    max_lists_per_epoch: PositiveInt = 2048


@dataclass(frozen=True)
class SasrecHyper:
    hidden: PositiveInt = SasrecConfig.hidden
    blocks: PositiveInt = SasrecConfig.blocks
    heads: PositiveInt = SasrecConfig.heads
    # the sequential study's choice on MovieLens' validation period (.0940 against .0920
    # at 0.2; docs/design.md, issue 14)
    dropout: Share = 0.5
    lr: NonNegativeFloat = SasrecConfig.lr
    weight_decay: NonNegativeFloat = SasrecConfig.weight_decay
    batch_size: PositiveInt = SasrecConfig.batch_size
    # at most this many epochs; the held-out tail of the training period chooses how many
    # (0: no SASRec in the set, its channel and blend term fall back to nothing)
    epochs: Count = SasrecConfig.max_epochs
    patience: PositiveInt = SasrecConfig.patience
    max_windows_per_epoch: PositiveInt = SasrecConfig.max_windows_per_epoch
    max_windows: PositiveInt = SasrecConfig.max_windows
    negatives: PositiveInt = SasrecConfig.negatives

    def config(self, max_length: int, seed: int, epochs: int | None = None) -> SasrecConfig:
        return SasrecConfig(
            max_length=max_length,
            hidden=self.hidden,
            blocks=self.blocks,
            heads=self.heads,
            dropout=self.dropout,
            lr=self.lr,
            weight_decay=self.weight_decay,
            batch_size=self.batch_size,
            max_epochs=self.epochs if epochs is None else epochs,
            patience=self.patience,
            max_windows_per_epoch=self.max_windows_per_epoch,
            max_windows=self.max_windows,
            negatives=self.negatives,
            seed=seed,
        )


def trained_cascade() -> CascadeConfig:
    """The cascade a trained set serves: RankNet re-ranks all 250 candidates, up to 100
    from the co-visitation channel, then 50 from SASRec's next items and the trend
    channel filling up to 100 more, recall adds the 14-day item prior, and the final score
    adds the co-visitation and SASRec scores (their weights chosen on the validation
    replay; ``docs/tuning.md``, ``docs/design.md`` "The cascade")."""
    return CascadeConfig(
        n_candidates=250,
        rerank_depth=250,
        trend_candidates=100,
        prior_weight=4.0,
        covisit_candidates=100,
        covisit_weight=2.0,
        sasrec_candidates=50,
        sasrec_weight=1.0,
    )


@dataclass(frozen=True)
class Hyper:
    lightgcn: LightGCNHyper = field(default_factory=lambda: LightGCNHyper())
    din: DINHyper = field(default_factory=lambda: DINHyper())
    ranknet: RankNetHyper = field(default_factory=lambda: RankNetHyper())
    sasrec: SasrecHyper = field(default_factory=lambda: SasrecHyper())
    cascade: CascadeConfig = field(default_factory=trained_cascade)

    @classmethod
    def read(cls, overrides: Hyper | Mapping[str, Any] | None) -> Hyper:
        """The defaults with ``overrides`` (``{"din": {"epochs": 1}}``) applied, validated."""
        if isinstance(overrides, Hyper):
            return overrides
        merged = _merge(asdict(cls()), overrides or {}, path="")
        try:
            return TypeAdapter(cls).validate_python(merged)
        except ValidationError as exc:
            raise ValueError(f"bad hyper-parameters: {exc}") from exc

    def as_dict(self) -> dict[str, Any]:
        """JSON-able, for MLflow parameters and the report."""
        return asdict(self)

    def with_cascade(self, **changes: Any) -> Hyper:
        return replace(self, cascade=replace(self.cascade, **changes))


def _merge(base: dict[str, Any], override: Mapping[str, Any], path: str) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if key not in merged:
            where = f" in {path!r}" if path else ""
            raise ValueError(f"unknown hyper-parameter {key!r}{where}; known: {sorted(merged)}")
        if isinstance(merged[key], dict):
            if not isinstance(value, Mapping):
                raise ValueError(f"hyper-parameter {key!r} must be an object")
            merged[key] = _merge(merged[key], value, key)
        else:
            merged[key] = value
    return merged


__all__ = [
    "DINHyper",
    "Hyper",
    "LightGCNHyper",
    "RankNetHyper",
    "SasrecHyper",
    "trained_cascade",
]
