"""The contract between training and serving: how a trained cascade is stored and found.

A *model set* is the four models trained together in one ``streamrec train`` run (the
cascade's three stages and SASRec, its sequential channel); they share one item index
(DIN's, RankNet's and SASRec's inputs only mean something next to the LightGCN that
produced their candidates), so they are promoted and served together.

Each stage is registered in MLflow under :data:`REGISTERED_NAMES` as a folder artifact:

- ``state_dict.pt``: ``torch.save`` of the module's state dict;
- ``config.json``: ``{"model": <the stage's config dataclass as a dict>, "model_set": <id>,
  ...}`` plus whatever else the stage needs to be rebuilt (see below);
- the LightGCN folder also holds ``vocab.json``: ``{"item_ids": [...], "user_ids": [...]}``
  (item index -> item id, user index -> user id, the order of the embedding rows), and its
  ``config.json`` carries ``"cascade"`` (a :class:`models.cascade.CascadeConfig` as a dict)
  and ``"features"`` (``{"trend_half_life_ms": ...}``) that serving must reproduce; its
  state dict may carry :data:`ITEM_PRIOR_KEY`, the cascade's (I,) item prior.

The SASRec folder's ``config.json`` has ``"model": null`` when the run trained none (its
channel then serves nothing).

Every version carries the tag ``model_set`` (the same value on the four models of one
run). The alias ``champion`` marks the serving set; promotion moves it on all four, one
after the other, so a reader that sees champions from two different sets is looking in the
middle of a promotion and should keep what it has and look again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

STAGES: tuple[str, ...] = ("lightgcn", "din", "ranknet", "sasrec")
REGISTERED_NAMES: dict[str, str] = {stage: f"streamrec-{stage}" for stage in STAGES}
# Models a set registered before they existed does not have: such a set is still found
# and served (the model's channel then serves nothing), so a champion trained before
# SASRec joined the set keeps serving after an upgrade.
OPTIONAL_STAGES: frozenset[str] = frozenset({"sasrec"})
CHAMPION = "champion"
# A set that passed the offline gate, waiting for its canary (``streamrec promote``).
CHALLENGER = "challenger"
SET_TAG = "model_set"
STATE_FILE = "state_dict.pt"
CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.json"
# In the LightGCN state dict: recent popularity per item at the training cutoff, what recall
# shows a user without history and blends into everyone else's scores.
ITEM_PRIOR_KEY = "item_prior"


def write_folder(
    folder: Path,
    state_dict: dict[str, torch.Tensor],
    config: dict[str, Any],
    vocab: dict[str, list[str]] | None = None,
) -> Path:
    """Write one stage's folder (created if missing) and return it."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state_dict, folder / STATE_FILE)
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
    if vocab is not None:
        (folder / VOCAB_FILE).write_text(json.dumps(vocab))
    return folder


@dataclass(frozen=True)
class StageFolder:
    state_dict: dict[str, torch.Tensor]
    config: dict[str, Any]
    vocab: dict[str, list[str]] | None


def read_folder(folder: Path) -> StageFolder:
    state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    config = json.loads((folder / CONFIG_FILE).read_text())
    vocab_path = folder / VOCAB_FILE
    vocab = json.loads(vocab_path.read_text()) if vocab_path.exists() else None
    return StageFolder(state, config, vocab)


@dataclass(frozen=True)
class ChampionSet:
    """Where the serving set lives: one registry version per stage, all of one model set."""

    set_id: str
    versions: dict[str, str]  # stage -> registered version
    sources: dict[str, str]  # stage -> artifact URI of the folder

    @property
    def label(self) -> str:
        """What responses report as ``model_version``."""
        return "cascade-" + "-".join(
            f"{stage}.v{self.versions[stage]}" for stage in STAGES if stage in self.versions
        )


def find_champion_set(client: Any, alias: str = CHAMPION) -> ChampionSet | None:
    """The current champion set (or the set holding ``alias``, e.g. ``challenger``), or
    None when some stage has no such alias or the stages' aliases point into different
    sets (a promotion is under way). A stage of :data:`OPTIONAL_STAGES` without the alias
    is left out of the set. ``client`` is an ``mlflow.MlflowClient``."""
    from mlflow.exceptions import MlflowException

    versions: dict[str, str] = {}
    sources: dict[str, str] = {}
    sets: set[str] = set()
    for stage in STAGES:
        try:
            version = client.get_model_version_by_alias(REGISTERED_NAMES[stage], alias)
        except MlflowException:
            if stage in OPTIONAL_STAGES:
                continue
            return None
        versions[stage] = str(version.version)
        sources[stage] = str(version.source)
        sets.add(str(version.tags.get(SET_TAG, "")))
    if len(sets) != 1 or "" in sets:
        return None
    return ChampionSet(sets.pop(), versions, sources)
