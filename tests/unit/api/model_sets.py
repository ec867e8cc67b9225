"""Tiny model sets registered in a real (SQLite, local artifacts) MLflow registry, in the
storage format of ``streamrec/infra/model_store.py``, for the API's model-serving tests.

Item embeddings are planted in groups, so recall is predictable: a user whose recent item
is in a group gets that group's other items first. DIN, RankNet and SASRec are random: the tests
check what they are for (one pass, reasons, order of stages), not what they learned.
"""

from __future__ import annotations

import tempfile
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from models.cascade import CascadeConfig
from models.din import DIN, DINConfig
from models.lightgcn import LightGCN, LightGCNConfig
from models.ranknet import RankNet, RankNetConfig
from models.sasrec import Sasrec, SasrecConfig, model_fields
from streamrec.infra.model_store import (
    CHAMPION,
    ITEM_PRIOR_KEY,
    REGISTERED_NAMES,
    SET_TAG,
    ChampionSet,
    write_folder,
)
from streamrec.settings import Settings
from training.registry import configure

# Each group points along its own axis: recall from one member finds the others.
GROUPS: dict[str, tuple[str, ...]] = {
    "a": ("a", "b", "x"),
    "c": ("c", "d"),
    "p": ("p", "q"),
    "rest": tuple(f"m{n}" for n in range(8)),
}
ITEMS: tuple[str, ...] = tuple(item for members in GROUPS.values() for item in members)
USERS: tuple[str, ...] = ("u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8")
DIM = 8


@dataclass
class TinySet:
    """What a registered set is made of; ``break_stage`` writes that stage unloadable."""

    seed: int = 0
    n_candidates: int = 3
    din_categories: bool = True
    break_stage: str | None = None
    export_embeddings: bool = True
    extra_config: dict[str, Any] = field(default_factory=dict)
    item_prior: torch.Tensor | None = None  # saved in the LightGCN state dict when given


def item_embeddings(seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    axes = torch.eye(DIM)
    rows = [axes[g] for g, members in enumerate(GROUPS.values()) for _ in members]
    return torch.stack(rows) + 0.01 * torch.randn(len(ITEMS), DIM, generator=generator)


def stage_folders(spec: TinySet, root: Path) -> dict[str, Path]:
    """The four folders of one set, written under ``root``."""
    torch.manual_seed(spec.seed)
    n_items, n_users = len(ITEMS), len(USERS)
    lightgcn = LightGCN(LightGCNConfig(n_users, n_items, dim=DIM, layers=1))
    items = item_embeddings(spec.seed)
    users = torch.randn(n_users, DIM)
    state: dict[str, torch.Tensor] = dict(lightgcn.state_dict())
    if spec.export_embeddings:
        state["user_embeddings"], state["item_embeddings"] = users, items
    if spec.item_prior is not None:
        state[ITEM_PRIOR_KEY] = spec.item_prior
    cascade = asdict(CascadeConfig(n_candidates=spec.n_candidates, rerank_depth=3))
    lightgcn_config = {
        "model": {**asdict(lightgcn.config), "from_the_future": 1},  # unknown keys are ignored
        "cascade": cascade,
        "features": {"trend_half_life_ms": 3 * 24 * 3600 * 1000},
        **spec.extra_config,
    }
    categories = [g for g, members in enumerate(GROUPS.values()) for _ in members]
    din_config = DINConfig(
        n_items=n_items,
        item_dim=DIM,
        n_categories=len(GROUPS) if spec.din_categories else 0,
        category_dim=4,
        context_dim=5,  # 3 item features + [activity, user_recency]
        attention_hidden=8,
        mlp_hidden=(16, 8),
    )
    din = DIN(din_config, torch.tensor(categories) if spec.din_categories else None).eval()
    ranknet = RankNet(RankNetConfig(hidden=(8,))).eval()
    sasrec = Sasrec(n_items, SasrecConfig(max_length=5, hidden=DIM, blocks=1)).eval()
    din_state = dict(din.state_dict())
    ranknet_state = dict(ranknet.state_dict())
    if spec.break_stage == "din":
        din_state["mlp.0.weight"] = torch.zeros(3, 3)  # does not fit the config
    if spec.break_stage == "ranknet":
        ranknet_state.pop("mlp.0.weight")
    vocab = {"item_ids": list(ITEMS), "user_ids": list(USERS)}
    if spec.break_stage == "lightgcn":
        vocab = {"item_ids": [], "user_ids": list(USERS)}
    # As training writes it: the item -> category map in DIN's config (and its buffer).
    din_extra = {"item_categories": categories} if spec.din_categories else {}
    return {
        "lightgcn": write_folder(root / "lightgcn", state, lightgcn_config, vocab),
        "din": write_folder(root / "din", din_state, {"model": asdict(din_config), **din_extra}),
        "ranknet": write_folder(root / "ranknet", ranknet_state, {"model": asdict(ranknet.config)}),
        "sasrec": write_folder(
            root / "sasrec", dict(sasrec.state_dict()), {"model": model_fields(sasrec.config)}
        ),
    }


def open_registry(settings: Settings) -> MlflowClient:
    """The registry of ``settings`` (created on first use, as training creates it)."""
    return configure(settings, experiment="api-tests")


def register_set(
    client: MlflowClient, spec: TinySet, *, promote: bool = True, set_id: str | None = None
) -> ChampionSet:
    """Log, register and (by default) promote the four models of one tiny set."""
    with tempfile.TemporaryDirectory() as scratch:
        return register_folders(
            client, stage_folders(spec, Path(scratch)), promote=promote, set_id=set_id
        )


def register_folders(
    client: MlflowClient,
    folders: dict[str, Path],
    *,
    promote: bool = True,
    set_id: str | None = None,
) -> ChampionSet:
    """Log the stage folders in one run, register a version per stage tagged with the set,
    and (by default) move ``champion`` to them, the way training promotes a set."""
    set_id = set_id or f"set-{uuid.uuid4().hex[:8]}"
    versions: dict[str, str] = {}
    sources: dict[str, str] = {}
    with mlflow.start_run() as run:
        for stage, folder in folders.items():
            mlflow.log_artifacts(str(folder), artifact_path=stage)
            sources[stage] = mlflow.get_artifact_uri(stage)
        for stage, name in REGISTERED_NAMES.items():
            try:
                client.create_registered_model(name)
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            version = client.create_model_version(
                name, sources[stage], run_id=run.info.run_id, tags={SET_TAG: set_id}
            ).version
            versions[stage] = str(version)
    if promote:
        promote_set(client, versions)
    return ChampionSet(set_id, versions, sources)


def promote_set(client: MlflowClient, versions: dict[str, str]) -> None:
    for stage, name in REGISTERED_NAMES.items():
        client.set_registered_model_alias(name, CHAMPION, versions[stage])
