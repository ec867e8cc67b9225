"""The set gate on a real MLflow backend (SQLite + local artifacts in a temp folder)."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import torch
from mlflow import MlflowClient

from streamrec.infra.model_store import (
    REGISTERED_NAMES,
    STAGES,
    find_champion_set,
    read_folder,
    write_folder,
)
from streamrec.settings import Settings
from training.registry import (
    LoggedModel,
    configure,
    gate_passes,
    log_folder,
    register_set_and_gate,
)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> MlflowClient:
    state_dir = tmp_path_factory.mktemp("mlflow") / "state"
    return configure(Settings(state_dir=state_dir).resolved(), experiment="gate-test")


def _set(tmp_path: Path, set_id: str, weight: float) -> dict[str, LoggedModel]:
    logged = {}
    with mlflow.start_run():
        for stage in STAGES:
            folder = write_folder(
                tmp_path / set_id / stage,
                {"weight": torch.full((2,), weight)},
                {"model": {"weight": weight}, "model_set": set_id},
                {"item_ids": ["a", "b"], "user_ids": ["u"]} if stage == "lightgcn" else None,
            )
            logged[stage] = log_folder(folder, stage)
    return logged


def test_the_rule_is_a_strict_improvement() -> None:
    assert gate_passes(0.1, None)
    assert gate_passes(0.3, 0.2)
    assert not gate_passes(0.2, 0.2)  # a tie keeps the champion
    assert not gate_passes(0.1, 0.2)
    assert gate_passes(0.1, 0.2, higher_is_better=False)


def test_a_set_is_promoted_whole_only_when_it_beats_the_champion_set(
    client: MlflowClient, tmp_path: Path
) -> None:
    first = register_set_and_gate(
        client, set_id="s1", models=_set(tmp_path, "s1", 1.0), metric_name="m", metric=0.20
    )
    assert first.promoted and first.champion is None
    champion = find_champion_set(client)
    assert champion is not None and champion.set_id == "s1"

    worse = register_set_and_gate(
        client, set_id="s2", models=_set(tmp_path, "s2", 2.0), metric_name="m", metric=0.15
    )
    assert not worse.promoted
    assert worse.champion == pytest.approx(0.20) and worse.champion_set == "s1"
    assert "does not beat" in worse.reason
    champion = find_champion_set(client)
    assert champion is not None and champion.set_id == "s1"
    for stage in STAGES:  # registered, tagged, not promoted
        version = client.get_model_version(REGISTERED_NAMES[stage], worse.versions[stage])
        assert version.tags["model_set"] == "s2"
        assert version.tags["promoted"] == "false"
        assert "does not beat" in version.tags["gate"]

    better = register_set_and_gate(
        client, set_id="s3", models=_set(tmp_path, "s3", 3.0), metric_name="m", metric=0.25
    )
    assert better.promoted and better.champion_set == "s1"
    champion = find_champion_set(client)
    assert champion is not None and champion.set_id == "s3"
    assert champion.versions == better.versions
    folder = read_folder(Path(mlflow.artifacts.download_artifacts(champion.sources["lightgcn"])))
    assert folder.config["model_set"] == "s3"
    assert torch.equal(folder.state_dict["weight"], torch.full((2,), 3.0))
    assert folder.vocab == {"item_ids": ["a", "b"], "user_ids": ["u"]}

    # Better than the champion, but it lost to a live baseline: registered, never promoted.
    refused = register_set_and_gate(
        client,
        set_id="s5",
        models=_set(tmp_path, "s5", 5.0),
        metric_name="m",
        metric=0.90,
        refused="loses to item-kNN live",
    )
    assert not refused.promoted
    assert refused.reason == "not eligible: loses to item-kNN live"
    champion = find_champion_set(client)
    assert champion is not None and champion.set_id == "s3"


def test_a_set_missing_a_stage_is_refused(client: MlflowClient, tmp_path: Path) -> None:
    models = _set(tmp_path, "s4", 4.0)
    del models["ranknet"]
    with pytest.raises(ValueError, match="missing \\['ranknet'\\]"):
        register_set_and_gate(client, set_id="s4", models=models, metric_name="m", metric=1.0)
