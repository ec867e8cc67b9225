from __future__ import annotations

import mlflow
import pytest
import torch
from mlflow import MlflowClient

from streamrec.settings import Settings
from training.registry import (
    CHAMPION,
    LoggedModel,
    champion_version,
    configure,
    load_model_folder,
    log_model_folder,
    register_and_gate,
)


def _logged(weight: float) -> LoggedModel:
    module = torch.nn.Linear(2, 1)
    with torch.no_grad():
        module.weight.fill_(weight)
    with mlflow.start_run():
        return log_model_folder(module, {"in": 2, "out": 1, "weight": weight})


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> MlflowClient:
    """One tracking database for the module: creating one runs MLflow's migrations."""
    state_dir = tmp_path_factory.mktemp("mlflow") / "state"
    return configure(Settings(state_dir=state_dir).resolved())


def test_gate_promotes_a_better_model_and_refuses_a_worse_one(client: MlflowClient) -> None:
    first = register_and_gate(
        client, name="din", model=_logged(0.1), metric_name="gauc", metric=0.70
    )
    assert first.promoted and first.champion is None
    worse = register_and_gate(
        client, name="din", model=_logged(0.2), metric_name="gauc", metric=0.65
    )
    assert not worse.promoted
    assert champion_version(client, "din") == first.version
    assert "does not beat" in client.get_model_version("din", worse.version).tags["gate"]
    better = register_and_gate(
        client, name="din", model=_logged(0.3), metric_name="gauc", metric=0.75
    )
    assert better.promoted and better.champion == 0.70
    assert champion_version(client, "din") == better.version
    # all three are registered, only the best is champion
    assert len(client.search_model_versions("name='din'")) == 3
    state, config = load_model_folder(f"models:/din@{CHAMPION}")
    assert config["weight"] == 0.3
    assert torch.allclose(state["weight"], torch.full((1, 2), 0.3))


def test_lower_is_better_metrics_gate_the_other_way(client: MlflowClient) -> None:
    register_and_gate(
        client,
        name="m",
        model=_logged(1),
        metric_name="loss",
        metric=0.5,
        higher_is_better=False,
    )
    decision = register_and_gate(
        client,
        name="m",
        model=_logged(2),
        metric_name="loss",
        metric=0.4,
        higher_is_better=False,
    )
    assert decision.promoted
