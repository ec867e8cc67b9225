"""MLflow: where trained stages are logged, registered, and promoted to ``champion``.

A model is a folder artifact (``state_dict.pt`` + ``config.json``) rather than a pickled
module, so loading it needs only the class and the config, never the training code's
import paths. Promotion is a gate: a registered version gets the ``champion`` alias only
when its validation metric beats the current champion's; the comparison is written as
tags on the candidate version, promoted or not.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from streamrec.settings import Settings

CHAMPION = "champion"
METRIC_TAG = "validation_metric"
METRIC_NAME_TAG = "validation_metric_name"


def configure(settings: Settings, experiment: str = "streamrec") -> MlflowClient:
    """Point MLflow at this environment's backend and make sure the experiment exists."""
    mlflow.set_tracking_uri(settings.mlflow_uri)
    if not settings.mlflow_tracking_uri:
        settings.mlflow_artifacts.mkdir(parents=True, exist_ok=True)
        (settings.state_dir / "mlflow").mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri=settings.mlflow_uri)
    if client.get_experiment_by_name(experiment) is None:
        location = None
        if not settings.mlflow_tracking_uri:
            location = settings.mlflow_artifacts.resolve().as_uri()
        client.create_experiment(experiment, artifact_location=location)
    mlflow.set_experiment(experiment)
    return client


@dataclass(frozen=True)
class LoggedModel:
    run_id: str
    artifact_uri: str  # where the folder lives; the registry's version source


def log_model_folder(
    module: torch.nn.Module, config: dict[str, Any], name: str = "model"
) -> LoggedModel:
    """Log a module's weights and config under the active run."""
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / name
        folder.mkdir()
        torch.save(module.state_dict(), folder / "state_dict.pt")
        (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
        mlflow.log_artifacts(str(folder), artifact_path=name)
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("log_model_folder needs an active MLflow run")
    return LoggedModel(run.info.run_id, mlflow.get_artifact_uri(name))


def load_model_folder(uri: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state_dict, config) of a logged model folder, e.g. ``models:/lightgcn@champion``."""
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    state = torch.load(local / "state_dict.pt", map_location="cpu", weights_only=True)
    config = json.loads((local / "config.json").read_text())
    return state, config


@dataclass(frozen=True)
class GateDecision:
    name: str
    version: str
    metric_name: str
    candidate: float
    champion: float | None
    champion_version: str | None
    promoted: bool

    @property
    def reason(self) -> str:
        if self.champion is None:
            return f"no champion yet: {self.metric_name}={self.candidate:.4f} promoted"
        verdict = "beats" if self.promoted else "does not beat"
        return (
            f"{self.metric_name}={self.candidate:.4f} {verdict} champion v{self.champion_version} "
            f"({self.champion:.4f})"
        )


def register_and_gate(
    client: MlflowClient,
    *,
    name: str,
    model: LoggedModel,
    metric_name: str,
    metric: float,
    higher_is_better: bool = True,
) -> GateDecision:
    """Register ``model`` as a new version of ``name``; move ``champion`` to it only if
    ``metric`` beats the champion's. The decision is tagged on the new version.

    Versions are created from the artifact folder directly (MLflow 3's ``register_model``
    of a ``runs:/`` URI expects a flavor-logged model, which these folders are not).
    """
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = client.create_model_version(name, model.artifact_uri, run_id=model.run_id).version
    client.set_model_version_tag(name, version, METRIC_TAG, repr(float(metric)))
    client.set_model_version_tag(name, version, METRIC_NAME_TAG, metric_name)
    champion_version, champion_metric = _champion(client, name)
    if champion_metric is None:
        promoted = True
    else:
        promoted = metric > champion_metric if higher_is_better else metric < champion_metric
    decision = GateDecision(
        name, str(version), metric_name, float(metric), champion_metric, champion_version, promoted
    )
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
    client.set_model_version_tag(name, version, "gate", decision.reason)
    client.set_model_version_tag(name, version, "promoted", str(promoted).lower())
    return decision


def champion_version(client: MlflowClient, name: str) -> str | None:
    version, _metric = _champion(client, name)
    return version


def _champion(client: MlflowClient, name: str) -> tuple[str | None, float | None]:
    try:
        current = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None, None
    value = current.tags.get(METRIC_TAG)
    return str(current.version), float(value) if value is not None else None
