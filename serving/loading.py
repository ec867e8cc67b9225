"""A downloaded champion set turned into what the cascade serves: pure, no registry I/O.

Input: one :class:`streamrec.infra.model_store.StageFolder` per stage (see that module for the
storage contract). Configs are read tolerantly, so a set trained by a newer version with
extra fields still loads: unknown keys are ignored and JSON lists become tuples.

LightGCN's folder defines the set's item and user index (``vocab.json``). Recall needs
the *propagated* embeddings, which depend on the training graph; a folder that carries
them (``user_embeddings`` / ``item_embeddings`` in its state dict) is served as is, a
folder with only the module's weights is served from its layer-0 embeddings (logged: the
set then recalls worse than it evaluated).

The folder may also carry ``item_prior`` (I,), the recall stage's cold-start ranking and
popularity term (``models.cascade.CascadeModels.item_prior``); without it recall falls
back to live popularity as before.

DIN, RankNet and SASRec are optional: a model whose folder does not build is left out and its
stage falls back, which the response's ``model_version`` shows.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from models.cascade import CascadeConfig, CascadeModels
from models.din import DIN, DINConfig
from models.lightgcn import LightGCN, LightGCNConfig
from models.ranknet import RankNet, RankNetConfig
from models.sasrec import Sasrec, SasrecConfig
from streamrec.infra.model_store import ITEM_PRIOR_KEY, StageFolder
from streams.folding import TREND_HALF_LIFE_MS

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Exported (propagated) embeddings, when the training side stores them with the weights.
USER_EMBEDDINGS_KEY = "user_embeddings"
ITEM_EMBEDDINGS_KEY = "item_embeddings"


class SetLoadError(ValueError):
    """A model set that cannot be served at all (no usable LightGCN folder or vocabulary)."""


@dataclass(frozen=True)
class LoadedCascade:
    """One champion set, ready to serve; never mutated after it is built."""

    label: str  # the set's model_version (ChampionSet.label)
    set_id: str
    models: CascadeModels
    config: CascadeConfig
    item_ids: tuple[str, ...]  # item index -> item id
    item_index: dict[str, int]
    user_index: dict[str, int]
    trend_half_life_ms: int
    categories: torch.Tensor | None  # (I,) long, for the diversity rule
    user_context_dim: int  # DIN's context width beyond the three item features
    stage_errors: dict[str, str] = field(default_factory=dict)  # stage -> why it is missing

    @property
    def stages(self) -> dict[str, bool]:
        return {
            "lightgcn": self.models.item_embeddings is not None,
            "din": self.models.din is not None,
            "ranknet": self.models.ranknet is not None,
            "sasrec": self.models.sasrec is not None,
        }


def config_from(cls: type[T], values: dict[str, Any] | None, **required: Any) -> T:
    """A config dataclass from a JSON dict: unknown keys dropped, lists made tuples."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs = {
        key: tuple(value) if isinstance(value, list) else value
        for key, value in (values or {}).items()
        if key in names
    }
    kwargs.update({key: value for key, value in required.items() if key not in kwargs})
    return cls(**kwargs)


def build_cascade(label: str, set_id: str, folders: dict[str, StageFolder]) -> LoadedCascade:
    """Build the serving set; raises SetLoadError when LightGCN or the vocabulary is unusable."""
    lightgcn = folders.get("lightgcn")
    if lightgcn is None or lightgcn.vocab is None:
        raise SetLoadError(f"set {set_id}: the LightGCN folder or its vocab.json is missing")
    item_ids = tuple(str(i) for i in lightgcn.vocab.get("item_ids", []))
    user_ids = [str(u) for u in lightgcn.vocab.get("user_ids", [])]
    if not item_ids:
        raise SetLoadError(f"set {set_id}: vocab.json lists no items")
    try:
        user_embeddings, item_embeddings = _embeddings(lightgcn, len(user_ids), len(item_ids))
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        raise SetLoadError(f"set {set_id}: LightGCN does not load: {exc}") from exc
    item_prior = lightgcn.state_dict.get(ITEM_PRIOR_KEY)
    if item_prior is not None and item_prior.shape != (len(item_ids),):
        raise SetLoadError(
            f"set {set_id}: item_prior has shape {tuple(item_prior.shape)}, not ({len(item_ids)},)"
        )
    cascade_config = config_from(CascadeConfig, lightgcn.config.get("cascade"))
    features = lightgcn.config.get("features") or {}
    half_life = int(features.get("trend_half_life_ms", TREND_HALF_LIFE_MS))

    errors: dict[str, str] = {}
    din: DIN | None = None
    categories: torch.Tensor | None = None
    if "din" in folders:
        try:
            din, categories = _din(folders["din"], len(item_ids))
        except (RuntimeError, KeyError, TypeError, ValueError) as exc:
            errors["din"] = f"{type(exc).__name__}: {exc}"
    else:
        errors["din"] = "no folder"
    ranknet: RankNet | None = None
    if "ranknet" in folders:
        try:
            ranknet = _ranknet(folders["ranknet"])
        except (RuntimeError, KeyError, TypeError, ValueError) as exc:
            errors["ranknet"] = f"{type(exc).__name__}: {exc}"
    else:
        errors["ranknet"] = "no folder"
    sasrec: Sasrec | None = None
    if "sasrec" in folders:
        try:
            sasrec = _sasrec(folders["sasrec"], len(item_ids))
        except (RuntimeError, KeyError, TypeError, ValueError) as exc:
            errors["sasrec"] = f"{type(exc).__name__}: {exc}"
    else:
        errors["sasrec"] = "no folder"
    for stage, error in errors.items():
        logger.warning("set %s: %s not served, its stage falls back: %s", set_id, stage, error)

    user_context_dim = max(din.config.context_dim - 3, 0) if din is not None else 0
    return LoadedCascade(
        label=label,
        set_id=set_id,
        models=CascadeModels(
            user_embeddings=user_embeddings,
            item_embeddings=item_embeddings,
            din=din,
            ranknet=ranknet,
            item_prior=item_prior.float() if item_prior is not None else None,
            sasrec=sasrec,
        ),
        config=cascade_config,
        item_ids=item_ids,
        item_index={item: index for index, item in enumerate(item_ids)},
        user_index={user: index for index, user in enumerate(user_ids)},
        trend_half_life_ms=half_life,
        categories=categories,
        user_context_dim=user_context_dim,
        stage_errors=errors,
    )


def _embeddings(
    folder: StageFolder, n_users: int, n_items: int
) -> tuple[torch.Tensor | None, torch.Tensor]:
    state = folder.state_dict
    if ITEM_EMBEDDINGS_KEY in state:
        items = state[ITEM_EMBEDDINGS_KEY].float()
        users = state.get(USER_EMBEDDINGS_KEY)
        users = users.float() if users is not None else None
    else:
        model = LightGCN(
            config_from(
                LightGCNConfig, folder.config.get("model"), n_users=n_users, n_items=n_items
            )
        )
        model.load_state_dict(state, strict=False)
        logger.warning(
            "the LightGCN folder has no exported %s: serving its layer-0 embeddings",
            ITEM_EMBEDDINGS_KEY,
        )
        users, items = model.user_embedding.weight.detach(), model.item_embedding.weight.detach()
    if items.shape[0] != n_items:
        raise ValueError(f"{items.shape[0]} item embeddings for {n_items} vocabulary items")
    if users is not None and users.shape[0] != n_users:
        raise ValueError(f"{users.shape[0]} user embeddings for {n_users} vocabulary users")
    return users, items


def _din(folder: StageFolder, n_items: int) -> tuple[DIN, torch.Tensor | None]:
    config = config_from(DINConfig, folder.config.get("model"), n_items=n_items)
    if config.n_items != n_items:
        raise ValueError(f"DIN has {config.n_items} items, the vocabulary {n_items}")
    listed = (folder.vocab or {}).get("item_categories", folder.config.get("item_categories"))
    categories = torch.tensor(listed, dtype=torch.long) if listed is not None else None
    # DIN saves its item -> category map as a buffer; build the module with that exact
    # tensor so the state dict fits, whatever the vocabulary lists.
    saved = folder.state_dict.get("item_categories")
    if saved is not None and saved.numel() > 0:
        categories = saved.long() if categories is None else categories
        module_categories: torch.Tensor | None = saved.long()
    else:
        module_categories = categories if config.n_categories > 0 else None
    if categories is not None and categories.shape != (n_items,):
        raise ValueError(f"item_categories has shape {tuple(categories.shape)}, not ({n_items},)")
    din = DIN(config, item_categories=module_categories)
    din.load_state_dict(folder.state_dict)
    return din.eval(), categories


def _ranknet(folder: StageFolder) -> RankNet:
    ranknet = RankNet(config_from(RankNetConfig, folder.config.get("model")))
    ranknet.load_state_dict(folder.state_dict)
    ranknet.freeze_for_placement()
    _trace(ranknet)
    return ranknet.eval()


def _sasrec(folder: StageFolder, n_items: int) -> Sasrec | None:
    """SASRec, or None when the set was trained without it (``"model": null``)."""
    values = folder.config.get("model")
    if values is None:
        return None
    sasrec = Sasrec(n_items, config_from(SasrecConfig, values))
    sasrec.load_state_dict(folder.state_dict)
    _trace(sasrec)
    return sasrec.eval()


def _trace(model: RankNet | Sasrec) -> None:
    """Serve the model's forward pass as a TorchScript trace (the same arithmetic, less
    Python per call); a model that does not trace is served eager, as before."""
    try:
        model.trace_for_serving()
    except RuntimeError as exc:
        logger.warning(
            "%s: serving the eager model, the trace failed: %s", type(model).__name__, exc
        )
