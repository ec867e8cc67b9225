"""A trained set as the registry stores it and as the API serves it.

``stage_folders`` writes the four folders of ``streamrec.infra.model_store``'s contract;
``served_set`` reads them back through ``serving.loading.build_cascade``, the API's own
loader, so an evaluation of the result scores exactly what serving would load.

Only users with a trained embedding row are written to the vocabulary: a user first seen
after the cutoff has an untrained (random) row in LightGCN's table, and recall must treat
them as new (their recent items alone), not blend that noise into their vector.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from serving.loading import USER_EMBEDDINGS_KEY, LoadedCascade, build_cascade
from streamrec.infra.model_store import ITEM_PRIOR_KEY, STAGES, read_folder, write_folder


def stage_folders(trained: Any, set_id: str, root: Path, n_trained_users: int) -> dict[str, Path]:
    """The four folders of ``streamrec.infra.model_store``'s contract, under ``root``."""
    modules = {
        "lightgcn": trained.lightgcn,
        "din": trained.din,
        "ranknet": trained.ranknet,
        "sasrec": getattr(trained, "sasrec", None),
    }
    folders = {}
    for stage in STAGES:
        config = {**trained.configs.get(stage, {"model": None}), "model_set": set_id}
        vocab = (
            {
                "item_ids": list(trained.item_ids),
                "user_ids": list(trained.user_ids[:n_trained_users]),
            }
            if stage == "lightgcn"
            else None
        )
        module = modules[stage]
        state = (
            {k: v.detach().cpu() for k, v in module.state_dict().items()}
            if module is not None
            else {}
        )
        if stage == "lightgcn":
            if USER_EMBEDDINGS_KEY in state:
                state[USER_EMBEDDINGS_KEY] = state[USER_EMBEDDINGS_KEY][:n_trained_users]
            if trained.item_prior is not None:
                state[ITEM_PRIOR_KEY] = trained.item_prior.detach().cpu()
        folders[stage] = write_folder(root / stage, state, config, vocab)
    return folders


def served_set(trained: Any, n_trained_users: int, label: str = "evaluated") -> LoadedCascade:
    """What the API loads for ``trained`` once it is registered (through a scratch folder)."""
    with tempfile.TemporaryDirectory(prefix="streamrec-served-") as scratch:
        folders = stage_folders(trained, label, Path(scratch), n_trained_users)
        return build_cascade(label, label, {s: read_folder(f) for s, f in folders.items()})
