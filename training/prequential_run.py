"""The prequential evaluation of a trained set, and ``streamrec evaluate-prequential``.

``evaluate_trained`` scores the set as the API would load it (``training.served_set``)
with :mod:`training.evaluation.prequential`: the item-kNN is tuned on the validation
period, then the cascade and the baselines, live and frozen at the cutoff, are scored on
the test period. ``streamrec train`` reports it; the command does the same on a prepared
log without Ray or MLflow (``training.fit.stages.train_all``), for studies and CI.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import replace
from typing import Any

import pandas as pd

from streamrec.paths import dataset_events, dataset_items
from streamrec.settings import Settings
from training.evaluation.prequential import (
    Cutoff,
    PrequentialConfig,
    fold_to_cutoff,
    prequential_evaluation,
    tuned_params,
    validate,
)
from training.served_set import served_set

log = logging.getLogger(__name__)


def evaluate_trained(
    trained: Any,
    data: Any,
    events: pd.DataFrame,
    config: PrequentialConfig,
    clicks: pd.DataFrame | None = None,
    item_categories: dict[str, list[str]] | None = None,
    at_cutoff: Cutoff | None = None,
) -> dict[str, Any]:
    """The test period's table, with the validation period's (``validation``): the kNN
    and the cascade's final blend tuned there, and the cascade against the live
    baselines, which the gate reads. ``at_cutoff``: ``fold_to_cutoff`` of ``events`` and
    ``clicks`` at the split's training end over the set's vocabulary, when folded already.

    ``trained`` takes the chosen blend (``apply_blend``), so the set registered afterwards
    serves what the test period scored.
    """
    split = data.split
    cascade = served_set(trained, split.n_train_users)
    # Both replays continue from one fold of the log before the cutoff (``at_cutoff``, when
    # the caller folded it already).
    if at_cutoff is None:
        at_cutoff = fold_to_cutoff(
            events, cascade.item_ids, split.train_end_ms, clicks=clicks, config=config
        )
    validation = validate(
        cascade,
        events,
        cascade.item_ids,
        cutoff_ms=split.train_end_ms,
        start_ms=split.train_end_ms,
        end_ms=split.validation_end_ms,
        config=config,
        clicks=clicks,
        at_cutoff=at_cutoff,
    )
    if apply_blend(trained, validation):
        cascade = served_set(trained, split.n_train_users)
    result = prequential_evaluation(
        cascade,
        events,
        cutoff_ms=split.train_end_ms,
        start_ms=split.validation_end_ms,
        tuned=tuned_params(validation),
        clicks=clicks,
        config=config,
        item_categories=item_categories,
        at_cutoff=at_cutoff,
    )
    return {**result, "validation": validation}


def apply_blend(trained: Any, validation: dict[str, Any]) -> bool:
    """Set ``trained``'s cascade blend weights to those ``validate`` chose; False when it
    chose none (no cascade was scored)."""
    chosen = validation.get("blend")
    if chosen is None:
        return False
    weights = {
        "covisit_weight": float(chosen["covisit_weight"]),
        "final_recall_weight": float(chosen["final_recall_weight"]),
        "sasrec_weight": float(chosen.get("sasrec_weight", 0.0)),
    }
    trained.cascade_config = replace(trained.cascade_config, **weights)
    trained.configs["lightgcn"]["cascade"] = {**trained.configs["lightgcn"]["cascade"], **weights}
    return True


def prequential_command(args: argparse.Namespace, settings: Settings) -> int:
    import torch

    from training.evaluation.prequential_report import markdown
    from training.fit.stages import prepare, train_all

    torch.set_num_threads(args.threads)
    events = pd.read_parquet(dataset_events(settings.data_dir, args.log))
    items_path = dataset_items(settings.data_dir, args.log)
    items = pd.read_parquet(items_path) if items_path.exists() else None
    started = time.monotonic()
    data = prepare(events, items, max_history=settings.recent_items_max)
    hyper = json.loads(args.hyper) if args.hyper else None
    trained = train_all(data, hyper, args.seed)
    trained_s = time.monotonic() - started
    config = PrequentialConfig(
        max_events=args.events or None,
        seed=args.seed,
        keep=settings.recent_items_max,
        processes=max(1, args.processes),
    )
    result = evaluate_trained(trained, data, events, config, item_categories=categories_of(items))
    result["source"] = {"log": args.log, "interactions": len(events), "hyper": hyper}
    result["timings"] = {"train_s": trained_s, "evaluate_s": time.monotonic() - started - trained_s}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "prequential.json").write_text(json.dumps(result, indent=1, default=str))
    text = markdown(result)
    (args.out / "prequential.md").write_text(text)
    print(text)
    return 0


def categories_of(items: pd.DataFrame | None) -> dict[str, list[str]] | None:
    """Each item's categories from a catalogue (None without one or without categories)."""
    if items is None or "categories" not in items.columns:
        return None
    return {
        str(item): [str(c) for c in listed]
        for item, listed in zip(items["item_id"], items["categories"], strict=True)
        if listed is not None and len(listed) > 0
    }
