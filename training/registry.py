"""MLflow: where trained stages are logged, registered, and promoted to ``champion``.

A model is a folder artifact (``state_dict.pt`` + ``config.json``) rather than a pickled
module, so loading it needs only the class and the config, never the training code's
import paths. Promotion is a gate: a registered version gets the ``champion`` alias only
when its validation metric beats the current champion's; the comparison is written as
tags on the candidate version, promoted or not. A cascade is gated as a set
(:func:`register_set_and_gate`): its three stages move to ``champion`` together or not at
all (see ``streamrec.infra.model_store``).
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from streamrec.infra.model_store import (
    CHALLENGER,
    REGISTERED_NAMES,
    SET_TAG,
    STAGES,
    find_champion_set,
    read_folder,
    write_folder,
)
from streamrec.infra.quiet import quiet_libraries
from streamrec.settings import Settings

CHAMPION = "champion"
METRIC_TAG = "validation_metric"
METRIC_NAME_TAG = "validation_metric_name"


def configure(settings: Settings, experiment: str = "streamrec") -> MlflowClient:
    """Point MLflow at this environment's backend and make sure the experiment exists."""
    quiet_libraries()
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
    if mlflow.active_run() is None:
        raise RuntimeError("log_model_folder needs an active MLflow run")
    with tempfile.TemporaryDirectory() as scratch:
        folder = write_folder(Path(scratch) / name, module.state_dict(), config)
        return log_folder(folder, name)


def log_folder(folder: Path, name: str) -> LoggedModel:
    """Log an already written model folder under the active run as artifact ``name``."""
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("log_folder needs an active MLflow run")
    mlflow.log_artifacts(str(folder), artifact_path=name)
    return LoggedModel(run.info.run_id, mlflow.get_artifact_uri(name))


def load_model_folder(uri: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state_dict, config) of a logged model folder, e.g. ``models:/lightgcn@champion``."""
    stage = read_folder(Path(mlflow.artifacts.download_artifacts(artifact_uri=uri)))
    return stage.state_dict, stage.config


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
    promoted = gate_passes(metric, champion_metric, higher_is_better)
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


@dataclass(frozen=True)
class SetDecision:
    """The gate's verdict on a whole model set (the three stages of one run)."""

    set_id: str
    versions: dict[str, str]  # stage -> the candidate's registered version
    metric_name: str
    candidate: float
    champion: float | None  # the champion set's metric, None when there was none
    champion_set: str | None
    champion_versions: dict[str, str] | None
    promoted: bool
    # Why the set may not be promoted whatever the champion: it lost to a baseline.
    refused: str | None = None
    # It passed the gate while a champion serves: ``challenger``, for a canary to decide.
    challenger: bool = False

    @property
    def reason(self) -> str:
        if self.refused is not None:
            return f"not eligible: {self.refused}"
        if self.champion is None:
            return f"no champion set yet: {self.metric_name}={self.candidate:.4f} promoted"
        verdict = "beats" if self.promoted or self.challenger else "does not beat"
        return (
            f"{self.metric_name}={self.candidate:.4f} {verdict} champion set "
            f"{self.champion_set} ({self.champion:.4f})"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "set_id": self.set_id,
            "versions": self.versions,
            "metric_name": self.metric_name,
            "candidate": self.candidate,
            "champion": self.champion,
            "champion_set": self.champion_set,
            "champion_versions": self.champion_versions,
            "promoted": self.promoted,
            "refused": self.refused,
            "challenger": self.challenger,
            "reason": self.reason,
        }


def gate_passes(candidate: float, champion: float | None, higher_is_better: bool = True) -> bool:
    """The gate's rule: promote when there is no champion, or on a strict improvement."""
    if champion is None:
        return True
    return candidate > champion if higher_is_better else candidate < champion


def register_set_and_gate(
    client: MlflowClient,
    *,
    set_id: str,
    models: dict[str, LoggedModel],
    metric_name: str,
    metric: float,
    higher_is_better: bool = True,
    refused: str | None = None,
    canary: bool = False,
) -> SetDecision:
    """Register one version per stage (names of ``streamrec.infra.model_store``), all tagged
    ``model_set=set_id``, and move ``champion`` to the three together only if ``metric``
    beats the current champion SET's. The set is compared whole because its stages share
    one item index; stages are never promoted one by one. A set ``refused`` (it lost to
    a baseline) is registered for the record and never promoted. With ``canary``, a set
    that passes while a champion serves gets ``challenger`` instead, and the online canary
    decides (:func:`decide_canary`); the first set of all has nothing to be canaried
    against and becomes champion.
    """
    missing = set(STAGES) - set(models)
    if missing:
        raise ValueError(f"a model set needs every stage; missing {sorted(missing)}")
    current = find_champion_set(client)
    champion_metric: float | None = None
    if current is not None:
        tag = client.get_model_version(
            REGISTERED_NAMES[STAGES[0]], current.versions[STAGES[0]]
        ).tags.get(METRIC_TAG)
        champion_metric = float(tag) if tag is not None else None
    passes = refused is None and gate_passes(float(metric), champion_metric, higher_is_better)
    challenger = passes and canary and current is not None
    promoted = passes and not challenger
    versions: dict[str, str] = {}
    for stage in STAGES:
        name = REGISTERED_NAMES[stage]
        try:
            client.create_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        logged = models[stage]
        version = str(
            client.create_model_version(name, logged.artifact_uri, run_id=logged.run_id).version
        )
        versions[stage] = version
        client.set_model_version_tag(name, version, SET_TAG, set_id)
        client.set_model_version_tag(name, version, METRIC_TAG, repr(float(metric)))
        client.set_model_version_tag(name, version, METRIC_NAME_TAG, metric_name)
    decision = SetDecision(
        set_id=set_id,
        versions=versions,
        metric_name=metric_name,
        candidate=float(metric),
        champion=champion_metric,
        champion_set=current.set_id if current is not None else None,
        champion_versions=dict(current.versions) if current is not None else None,
        promoted=promoted,
        refused=refused,
        challenger=challenger,
    )
    for stage in STAGES:
        name, version = REGISTERED_NAMES[stage], versions[stage]
        client.set_model_version_tag(name, version, "gate", decision.reason)
        client.set_model_version_tag(name, version, "promoted", str(promoted).lower())
    if promoted or challenger:
        alias = CHAMPION if promoted else CHALLENGER
        for stage in STAGES:
            client.set_registered_model_alias(REGISTERED_NAMES[stage], alias, versions[stage])
    return decision


# -- the canary -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CanaryDecision:
    """What the canary's numbers say: ``promote``, ``rollback`` or ``wait``, and why."""

    action: str
    reason: str
    p_value: float | None = None


def decide_canary(
    champion_clicks: int,
    champion_lists: int,
    challenger_clicks: int,
    challenger_lists: int,
    *,
    margin: float,
    min_lists: int,
    alpha: float = 0.05,
) -> CanaryDecision:
    """A fixed-horizon non-inferiority test of the challenger's CTR against the champion's.

    Wait until each side served ``min_lists`` lists; then test H0: ``ctr_challenger <=
    ctr_champion - margin`` one-sided with the unpooled normal statistic (Wald); promote
    when H0 is rejected at ``alpha`` (the challenger is not worse by more than the margin),
    roll back otherwise. Decided once, at the horizon: looking repeatedly and stopping at
    the first good look would inflate the error, so ``streamrec promote`` run before the
    horizon only waits.
    """
    from scipy import stats

    if min(champion_lists, challenger_lists) < min_lists:
        return CanaryDecision(
            "wait",
            f"{challenger_lists} challenger and {champion_lists} champion lists of the "
            f"{min_lists} each needed",
        )
    p0 = champion_clicks / champion_lists
    p1 = challenger_clicks / challenger_lists
    variance = p0 * (1 - p0) / champion_lists + p1 * (1 - p1) / challenger_lists
    if variance == 0.0:
        not_worse = p1 > p0 - margin
        p_value = 0.0 if not_worse else 1.0
    else:
        z = (p1 - p0 + margin) / variance**0.5
        p_value = float(stats.norm.sf(z))
    verdict = (
        f"challenger CTR {p1:.4f} vs champion {p0:.4f} over {challenger_lists}/"
        f"{champion_lists} lists, margin {margin}: non-inferiority p={p_value:.4g}"
    )
    if p_value < alpha:
        return CanaryDecision("promote", verdict, p_value)
    return CanaryDecision("rollback", verdict, p_value)


def finish_canary(client: MlflowClient, decision: CanaryDecision) -> dict[str, str] | None:
    """Act on a decision: move ``champion`` to the challenger set (promote) or drop its
    ``challenger`` alias (rollback), and record the decision on its versions. Returns the
    challenger's versions, None when no set holds the alias."""
    challenger = find_champion_set(client, CHALLENGER)
    if challenger is None or decision.action == "wait":
        return None
    for stage in STAGES:
        name = REGISTERED_NAMES[stage]
        if stage not in challenger.versions:  # a set from before this model existed
            if decision.action == "promote":
                # a champion version of it belongs to the set being replaced (if any has it)
                with contextlib.suppress(MlflowException):
                    client.delete_registered_model_alias(name, CHAMPION)
            continue
        version = challenger.versions[stage]
        client.set_model_version_tag(name, version, "canary", decision.action)
        client.set_model_version_tag(name, version, "canary_reason", decision.reason)
        if decision.action == "promote":
            client.set_registered_model_alias(name, CHAMPION, version)
            client.set_model_version_tag(name, version, "promoted", "true")
        client.delete_registered_model_alias(name, CHALLENGER)
    return dict(challenger.versions)
