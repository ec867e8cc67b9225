"""``streamrec canary`` and ``streamrec promote`` on the real Redis and an MLflow registry:
a challenger set gets its canary, the worker's counters (folded here by the same script)
decide, and the aliases move or the set is rolled back, recorded on its versions. The
monitor decides a running canary the same way, by itself, and logs it on its topic."""

from __future__ import annotations

import json
import random
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow import MlflowClient

from streamrec.infra.experiments import RedisExperimentFold, RedisExperimentStore
from streamrec.infra.model_store import (
    CHALLENGER,
    REGISTERED_NAMES,
    STAGES,
    find_champion_set,
    write_folder,
)
from streamrec.infra.processes import run_streamrec, streamrec_process
from streamrec.settings import Settings
from streams.events import Click, RecommendationServed, RecommendedItem
from streams.experiments import fold_calls
from tests.support import monitor_decisions, wait_until
from training.registry import LoggedModel, configure, log_folder, register_set_and_gate

LISTS = 1200


def _register(client: MlflowClient, tmp_path: Path, set_id: str, metric: float) -> None:
    logged: dict[str, LoggedModel] = {}
    with mlflow.start_run():
        for stage in STAGES:
            folder = write_folder(
                tmp_path / set_id / stage,
                {"weight": torch.zeros(2)},
                {"model": {}, "model_set": set_id},
                {"item_ids": ["a"], "user_ids": ["u"]} if stage == "lightgcn" else None,
            )
            logged[stage] = log_folder(folder, stage)
    register_set_and_gate(
        client, set_id=set_id, models=logged, metric_name="m", metric=metric, canary=True
    )


def _traffic(settings: Settings, ctr: dict[str, float], seed: int) -> None:
    """Served lists of the canary with clicks at the given CTR per variant."""
    rng = random.Random(seed)
    events: list[RecommendationServed | Click] = []
    for n in range(LISTS):
        for variant, rate in ctr.items():
            request = f"{variant}-{seed}-{n}"
            events.append(
                RecommendationServed(
                    request_id=request,
                    user_id=f"u{n}",
                    variant=variant,
                    experiment="canary",
                    model_version="m",
                    items=(RecommendedItem(item_id="a", rank=1, score=0.0, reason=""),),
                )
            )
            if rng.random() < rate:
                events.append(Click(request_id=request, user_id=f"u{n}", item_id="a", rank=1))
    RedisExperimentFold(settings.redis_connection_url or "", settings.topic_prefix).fold(
        fold_calls(events)
    )


def _canary_of_s2(settings: Settings, tmp_path: Path, experiment: str) -> MlflowClient:
    """Set s1 champion, s2 challenger, and the canary of s2 started by the command."""
    client = configure(settings, experiment=experiment)
    _register(client, tmp_path, "s1", 0.2)
    _register(client, tmp_path, "s2", 0.3)
    run_streamrec(settings, "canary", "--share", "0.2")
    return client


@pytest.mark.timeout(600)  # five `streamrec` processes and MLflow on a shared 2-core host
def test_promote_after_a_good_canary_then_roll_back_a_bad_one(
    redis_settings: Settings, tmp_path: Path
) -> None:
    settings = redis_settings
    client = _canary_of_s2(settings, tmp_path, "canary-test")
    store = RedisExperimentStore(settings.redis_connection_url or "", settings.topic_prefix)
    assert "canary" in store.load()

    early = json.loads(run_streamrec(settings, "promote", "--min-lists", "1000").splitlines()[-1])
    assert early["action"] == "wait"
    _traffic(settings, {"champion": 0.10, "challenger": 0.11}, seed=1)
    promoted = json.loads(run_streamrec(settings, "promote", "--margin", "0.02").splitlines()[-1])
    assert promoted["action"] == "promote", promoted
    champion = find_champion_set(client)
    assert champion is not None and champion.set_id == "s2"
    assert find_champion_set(client, CHALLENGER) is None
    assert "canary" not in store.load()

    _register(client, tmp_path, "s3", 0.4)
    run_streamrec(settings, "canary", "--share", "0.2")
    _traffic(settings, {"champion": 0.12, "challenger": 0.05}, seed=2)
    rolled = json.loads(run_streamrec(settings, "promote", "--margin", "0.02").splitlines()[-1])
    assert rolled["action"] == "rollback", rolled
    champion = find_champion_set(client)
    assert champion is not None and champion.set_id == "s2"
    for stage, version in rolled["challenger_versions"].items():
        tags = client.get_model_version(REGISTERED_NAMES[stage], version).tags
        assert tags["canary"] == "rollback" and "non-inferiority" in tags["canary_reason"]


@pytest.mark.timeout(600)
def test_the_monitor_decides_the_canary_and_logs_it(
    live_settings: Settings, tmp_path: Path
) -> None:
    settings = live_settings
    client = _canary_of_s2(settings, tmp_path, "canary-monitor-test")
    log = tmp_path / "monitor.log"
    try:
        with streamrec_process(
            settings, "monitor", "--canary-margin", "0.02", "--canary-min-lists", "1000", log=log
        ) as monitor:
            _traffic(settings, {"champion": 0.10, "challenger": 0.11}, seed=3)

            def promoted() -> bool:
                champion = find_champion_set(client)
                return champion is not None and champion.set_id == "s2"

            wait_until(promoted, 120, "the monitor to promote s2", proc=monitor, log=log)
            decided = wait_until(
                lambda: [d for d in monitor_decisions(settings) if d.decision.startswith("canary")],
                30,
                "the canary's decision on the monitor topic",
            )
            assert [d.decision for d in decided] == ["canary_promoted"]
            assert decided[0].new_set == "s2" and decided[0].promoted is True
            assert "non-inferiority" in decided[0].detail
            assert find_champion_set(client, CHALLENGER) is None
            store = RedisExperimentStore(settings.redis_connection_url or "", settings.topic_prefix)
            assert "canary" not in store.load()
            assert monitor.poll() is None
    finally:
        import redis

        keys = redis.Redis.from_url(settings.redis_connection_url or "")
        for key in keys.scan_iter(f"{settings.topic_prefix}*"):
            keys.delete(key)
