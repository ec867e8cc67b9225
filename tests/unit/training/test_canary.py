"""Staged promotion on a real MLflow backend: a passing set becomes challenger; the
canary's numbers promote it or roll it back, recorded on its versions; the monitor starts
and decides the canary of a retrained challenger itself."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import torch
from mlflow import MlflowClient

from api.experiments.definitions import ExperimentSpec
from streamrec.infra.experiments import MemoryExperimentStore
from streamrec.infra.model_store import (
    CHALLENGER,
    REGISTERED_NAMES,
    STAGES,
    find_champion_set,
    write_folder,
)
from streamrec.settings import Settings
from streams.events import MonitorDecision
from training.canary import CANARY, canary_definition
from training.monitoring.metrics import MonitorMetrics
from training.monitoring.monitor import MonitorConfig, MonitorState, RetrainOutcome
from training.monitoring.policy import PolicyConfig
from training.monitoring.runner import CanaryDriver, CanaryPolicy
from training.registry import (
    LoggedModel,
    configure,
    decide_canary,
    finish_canary,
    log_folder,
    register_set_and_gate,
)


@pytest.fixture
def client(tmp_path: Path) -> MlflowClient:
    return configure(Settings(state_dir=tmp_path / "state").resolved(), experiment="canary")


def _set(tmp_path: Path, set_id: str) -> dict[str, LoggedModel]:
    logged = {}
    with mlflow.start_run():
        for stage in STAGES:
            folder = write_folder(
                tmp_path / set_id / stage,
                {"weight": torch.zeros(2)},
                {"model": {}, "model_set": set_id},
                {"item_ids": ["a", "b"], "user_ids": ["u"]} if stage == "lightgcn" else None,
            )
            logged[stage] = log_folder(folder, stage)
    return logged


def _register(client: MlflowClient, tmp_path: Path, set_id: str, metric: float) -> None:
    register_set_and_gate(
        client,
        set_id=set_id,
        models=_set(tmp_path, set_id),
        metric_name="m",
        metric=metric,
        canary=True,
    )


def test_the_non_inferiority_rule() -> None:
    wait = decide_canary(50, 500, 50, 400, margin=0.01, min_lists=500)
    assert wait.action == "wait"
    same = decide_canary(1000, 5000, 1010, 5000, margin=0.02, min_lists=1000)
    assert same.action == "promote" and same.p_value is not None and same.p_value < 0.05
    worse = decide_canary(1000, 5000, 700, 5000, margin=0.02, min_lists=1000)
    assert worse.action == "rollback"
    # within the margin in expectation but too few lists to show it: not promoted
    unsure = decide_canary(100, 1000, 98, 1000, margin=0.005, min_lists=1000)
    assert unsure.action == "rollback"


def test_a_canary_promotes_the_challenger(client: MlflowClient, tmp_path: Path) -> None:
    _register(client, tmp_path, "s1", 0.2)  # the first set: champion at once
    _register(client, tmp_path, "s2", 0.3)  # passes the gate: challenger only
    champion = find_champion_set(client)
    challenger = find_champion_set(client, CHALLENGER)
    assert champion is not None and champion.set_id == "s1"
    assert challenger is not None and challenger.set_id == "s2"
    decision = decide_canary(1000, 5000, 1010, 5000, margin=0.02, min_lists=1000)
    versions = finish_canary(client, decision)
    assert versions == challenger.versions
    champion = find_champion_set(client)
    assert champion is not None and champion.set_id == "s2"
    assert find_champion_set(client, CHALLENGER) is None
    tags = client.get_model_version(REGISTERED_NAMES["din"], versions["din"]).tags
    assert tags["canary"] == "promote" and "non-inferiority" in tags["canary_reason"]


def test_a_worse_canary_is_rolled_back_and_recorded(client: MlflowClient, tmp_path: Path) -> None:
    _register(client, tmp_path, "s1", 0.2)
    _register(client, tmp_path, "s2", 0.3)
    _register(client, tmp_path, "s3", 0.1)  # fails the gate: neither alias
    challenger = find_champion_set(client, CHALLENGER)
    assert challenger is not None and challenger.set_id == "s2"
    decision = decide_canary(1000, 5000, 700, 5000, margin=0.02, min_lists=1000)
    versions = finish_canary(client, decision)
    assert versions is not None
    champion = find_champion_set(client)
    assert champion is not None and champion.set_id == "s1"
    assert find_champion_set(client, CHALLENGER) is None
    for stage in STAGES:
        tags = client.get_model_version(REGISTERED_NAMES[stage], versions[stage]).tags
        assert tags["canary"] == "rollback"
    assert finish_canary(client, decision) is None  # nothing left to decide


def _state() -> tuple[MonitorState, list[MonitorDecision]]:
    published: list[MonitorDecision] = []
    state = MonitorState(
        MonitorConfig(100, 100, 100, PolicyConfig()),
        MonitorMetrics.create(),
        publish=published.append,
        retrain=lambda: None,
    )
    return state, published


def _count(metrics: MonitorMetrics, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "streamrec_monitor_canaries_total", {"outcome": outcome}
    )
    return value or 0.0


def test_the_canary_definition_is_one_the_api_accepts() -> None:
    spec = ExperimentSpec.model_validate(canary_definition(0.2, now_ms=1_700_000_000_000))
    assert spec.name == CANARY and spec.mode == "ab" and spec.created_ms == 1_700_000_000_000
    variants = [(v.name, v.strategy, v.share) for v in spec.variants]
    assert variants == [("champion", "champion", 0.8), ("challenger", "challenger", 0.2)]
    with pytest.raises(ValueError, match="share"):
        canary_definition(1.0)


def test_the_monitor_canaries_a_retrained_challenger_then_promotes_it(
    client: MlflowClient, tmp_path: Path
) -> None:
    _register(client, tmp_path, "s1", 0.2)
    _register(client, tmp_path, "s2", 0.3)  # what a retrain that passed the gate leaves
    store = MemoryExperimentStore()
    policy = CanaryPolicy(share=0.2, margin=0.02, min_lists=1000, check_seconds=0.0)
    driver = CanaryDriver(policy, store, client)
    state, published = _state()
    outcome = RetrainOutcome(True, 12.0, set_id="s2", promoted=False, challenger=True)
    state.retrain_done(outcome)
    driver.start(state, outcome)
    shares = {v["name"]: v["share"] for v in store.load()[CANARY]["variants"]}
    assert shares == {"champion": 0.8, "challenger": 0.2}

    assert driver.check(state) is False  # no lists yet: the canary waits
    store.counters[CANARY] = {
        "champion": {"impressions": 999, "clicks": 200},
        "challenger": {"impressions": 5000, "clicks": 1010},
    }
    assert driver.check(state) is False  # one side short of the horizon
    store.counters[CANARY]["champion"] = {"impressions": 5000, "clicks": 1000}
    assert driver.check(state) is True
    champion = find_champion_set(client)
    assert champion is not None and champion.set_id == "s2"
    assert CANARY not in store.load()
    assert [d.decision for d in published] == [
        "retrain_finished",
        "canary_started",
        "canary_promoted",
    ]
    assert published[-1].new_set == "s2" and published[-1].promoted is True
    assert "non-inferiority" in published[-1].detail
    assert _count(state.metrics, "started") == 1 and _count(state.metrics, "promoted") == 1
    retrains = state.metrics.registry.get_sample_value(
        "streamrec_monitor_retrains_total", {"outcome": "challenger"}
    )
    assert retrains == 1
    assert driver.check(state) is False  # decided once; nothing runs any more


def test_the_monitor_rolls_back_a_worse_challenger(client: MlflowClient, tmp_path: Path) -> None:
    _register(client, tmp_path, "s1", 0.2)
    _register(client, tmp_path, "s2", 0.3)
    store = MemoryExperimentStore()
    driver = CanaryDriver(CanaryPolicy(min_lists=1000, check_seconds=0.0), store, client)
    state, published = _state()
    driver.start(state, RetrainOutcome(True, 1.0, set_id="s2", challenger=True))
    store.counters[CANARY] = {
        "champion": {"impressions": 5000, "clicks": 1000},
        "challenger": {"impressions": 5000, "clicks": 700},
    }
    assert driver.check(state) is True
    champion = find_champion_set(client)
    assert champion is not None and champion.set_id == "s1"
    assert find_champion_set(client, CHALLENGER) is None
    assert published[-1].decision == "canary_rolled_back" and published[-1].promoted is False
    assert _count(state.metrics, "rolled_back") == 1


class _AwayStore(MemoryExperimentStore):
    def load(self) -> dict[str, dict[str, object]]:
        raise ConnectionError("Redis is away")


def test_a_store_that_is_away_does_not_stop_the_monitor(client: MlflowClient) -> None:
    driver = CanaryDriver(CanaryPolicy(check_seconds=0.0), _AwayStore(), client)
    state, published = _state()
    assert driver.check(state) is False and published == []


def test_a_set_from_before_sasrec_is_still_found_and_replaced(
    client: MlflowClient, tmp_path: Path
) -> None:
    # A champion registered by a build whose sets had three models: no streamrec-sasrec.
    with mlflow.start_run():
        for stage in ("lightgcn", "din", "ranknet"):
            folder = write_folder(
                tmp_path / "old" / stage,
                {"weight": torch.zeros(2)},
                {"model": {}, "model_set": "old"},
                {"item_ids": ["a", "b"], "user_ids": ["u"]} if stage == "lightgcn" else None,
            )
            logged = log_folder(folder, stage)
            name = REGISTERED_NAMES[stage]
            client.create_registered_model(name)
            version = client.create_model_version(name, logged.artifact_uri, run_id=logged.run_id)
            client.set_model_version_tag(name, version.version, "model_set", "old")
            client.set_model_version_tag(name, version.version, "validation_metric", "0.1")
            client.set_registered_model_alias(name, "champion", version.version)
    old = find_champion_set(client)
    assert old is not None and old.set_id == "old" and "sasrec" not in old.versions
    assert old.label == "cascade-lightgcn.v1-din.v1-ranknet.v1"
    # A four-model set that passes: its canary promotes it, SASRec included.
    _register(client, tmp_path, "new", 0.3)
    challenger = find_champion_set(client, CHALLENGER)
    assert challenger is not None and set(challenger.versions) == set(STAGES)
    finish_canary(client, decide_canary(1000, 5000, 1010, 5000, margin=0.02, min_lists=1000))
    champion = find_champion_set(client)
    assert champion is not None and champion.set_id == "new" and "sasrec" in champion.versions
    # And back: promoting a three-model challenger drops SASRec's champion alias with it.
    for stage in ("lightgcn", "din", "ranknet"):
        client.set_registered_model_alias(REGISTERED_NAMES[stage], CHALLENGER, old.versions[stage])
    finish_canary(client, decide_canary(1000, 5000, 1010, 5000, margin=0.02, min_lists=1000))
    back = find_champion_set(client)
    assert back is not None and back.set_id == "old" and "sasrec" not in back.versions
