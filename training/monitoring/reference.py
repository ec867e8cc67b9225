"""A model set's reference distributions, saved with the set in MLflow, and what the
monitor reads back about the serving set: the reference and the set's offline quality."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from streamrec.infra.model_store import REGISTERED_NAMES, STAGES, find_champion_set
from streams.drift_reference import Reference, build_reference

log = logging.getLogger(__name__)

REFERENCE_ARTIFACT = "reference/reference.json"  # under the set's training run
REPORT_ARTIFACT = "report/eval.json"


def training_reference(
    events: pd.DataFrame,
    *,
    until_ms: int,
    window_events: int,
    category_of: dict[str, str],
    clicks: pd.DataFrame | None = None,
    din: list[float] | None = None,
) -> Reference:
    """The reference of a training window: ``events`` are the archived interactions the
    set was trained from (any order; sorted by event time here)."""
    ordered = events.sort_values("event_time", kind="stable")
    return build_reference(
        until_ms=until_ms,
        user_ids=ordered["user_id"].astype(str).tolist(),
        item_ids=ordered["item_id"].astype(str).tolist(),
        actions=ordered["action"].astype(str).tolist(),
        window_events=window_events,
        category_of=category_of,
        click_ranks=clicks["rank"].astype(int).tolist() if clicks is not None else [],
        din_scores=din or [],
    )


def log_reference(reference: Reference) -> None:
    """Save the reference under the active MLflow run (the set's training run)."""
    import mlflow

    mlflow.log_text(reference.to_json(), REFERENCE_ARTIFACT)
    mlflow.set_tag("reference.events", str(reference.events))


@dataclass(frozen=True)
class MonitoredSet:
    """The serving set as the monitor sees it."""

    set_id: str
    label: str  # what the API reports as model_version
    run_id: str
    reference: Reference | None  # None for a set trained before references were saved
    offline_ndcg: float | None  # the set's own figure, from its report
    offline_hit: float | None
    offline_source: str  # which figure of the report


def offline_quality(report: dict[str, Any]) -> tuple[float | None, float | None, str]:
    """(NDCG@10, Hit@10, where from): the test period replayed prequentially when the
    report has it (the protocol the monitor runs live), else the static test split."""
    streaming = report.get("streaming") or {}
    arm = streaming.get("all", {}).get("arms", {}).get("cascade live")
    if arm and arm.get("ndcg@10") is not None:
        return float(arm["ndcg@10"]), _maybe(arm.get("hit@10")), "prequential test, cascade live"
    static = report.get("cascade", {}).get("mean", {}).get("cascade", {})
    if static.get("ndcg@10") is not None:
        return float(static["ndcg@10"]), _maybe(static.get("hit@10")), "static test split"
    return None, None, "none"


def _maybe(value: Any) -> float | None:
    return float(value) if value is not None and np.isfinite(value) else None


def champion(client: Any) -> MonitoredSet | None:
    """The champion set with its reference and offline figures, or None (no champion, or
    a promotion under way)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    found = find_champion_set(client)
    if found is None:
        return None
    run_id = client.get_model_version(REGISTERED_NAMES[STAGES[0]], found.versions[STAGES[0]]).run_id
    reference: Reference | None = None
    report: dict[str, Any] = {}
    try:
        text = mlflow.artifacts.load_text(f"runs:/{run_id}/{REFERENCE_ARTIFACT}")
        reference = Reference.from_json(text)
    except (MlflowException, OSError, ValueError) as exc:
        log.warning("set %s has no usable reference: %s", found.set_id, exc)
    try:
        report = json.loads(mlflow.artifacts.load_text(f"runs:/{run_id}/{REPORT_ARTIFACT}"))
    except (MlflowException, OSError, ValueError) as exc:
        log.warning("set %s has no readable report: %s", found.set_id, exc)
    ndcg, hit, source = offline_quality(report)
    return MonitoredSet(found.set_id, found.label, run_id, reference, ndcg, hit, source)
