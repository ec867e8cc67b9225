"""`streamrec train` end to end: a real log through Kafka and the archiver, Ray Train,
MLflow, the registry gate, and the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from streamrec.model_store import REGISTERED_NAMES, STAGES, find_champion_set
from streamrec.processes import CommandFailed, run_streamrec
from streamrec.settings import Settings

pytestmark = pytest.mark.integration

TINY: dict[str, dict[str, Any]] = {
    "lightgcn": {"dim": 16, "layers": 2, "epochs": 15, "lr": 0.02, "batch_size": 512},
    "din": {"item_dim": 8, "category_dim": 4, "attention_hidden": 8, "mlp_hidden": [16]},
    "ranknet": {"hidden": [8], "epochs": 5},
}
# The same shapes, nothing learned: a set that must lose the gate.
UNTRAINED = {
    "lightgcn": {**TINY["lightgcn"], "lr": 0.0},
    "din": {**TINY["din"], "lr": 0.0},
    "ranknet": {**TINY["ranknet"], "lr": 0.0},
}


def _train(
    settings: Settings, report_dir: Path, workers: int, hyper: dict[str, Any]
) -> dict[str, Any]:
    output = run_streamrec(
        settings,
        "train",
        "--workers",
        str(workers),
        "--hyper",
        json.dumps(hyper),
        "--report-dir",
        str(report_dir),
        "--streaming-events",
        "300",
        "--no-bpr",
        timeout=1200,
    )
    assert "gate:" in output, output
    return json.loads((report_dir / "eval.json").read_text())


@pytest.mark.timeout(2400)  # two Ray Train runs on a shared 2-core machine
def test_train_registers_gates_and_reports(live_settings: Settings, tmp_path: Path) -> None:
    settings = live_settings
    with pytest.raises(CommandFailed, match="no archived interactions"):
        run_streamrec(settings, "train", "--report-dir", str(tmp_path / "none"))

    run_streamrec(settings, "data", "prepare", "synthetic:users=150,items=120,events=6000,seed=5")
    run_streamrec(settings, "replay", "synthetic", "--speed", "max")
    archived = run_streamrec(settings, "archive", "--once")
    assert "6,000 rows written" in archived, archived

    first = _train(settings, tmp_path / "first", 1, TINY)
    assert first["source"]["interactions"] == 6000
    assert first["config"]["workers"] == 1 and first["config"]["seeds"] == [0]
    for name in ("popularity (all training)", "recent popularity 14d"):
        assert first["baselines"][name]["mean"]["n_users"] == first["split"]["test_users"]
    cascade = first["cascade"]["mean"]
    for stage, key in (("lightgcn", "recall@50"), ("din", "gauc"), ("cascade", "ndcg@10")):
        assert 0.0 <= cascade[stage][key] <= 1.0
    assert "delta_ndcg@10" in cascade["ranknet"]
    streaming = first["streaming"]
    assert 0 < streaming["n_events"] <= 300
    assert {"live", "frozen", "delta_ndcg@10", "paired"} <= streaming.keys()
    assert len(first["targets"]) == 4
    gate = first["gate"]
    assert gate["promoted"] and gate["champion"] is None
    assert gate["candidate"] == first["validation"]["runs"][0]["cascade"]["ndcg@10"]
    assert "## Registry gate" in (tmp_path / "first" / "eval.md").read_text()

    client = MlflowClient(tracking_uri=settings.mlflow_uri)
    champion = find_champion_set(client)
    assert champion is not None and champion.set_id == first["set_id"]
    assert champion.versions == gate["versions"] == {stage: "1" for stage in STAGES}
    run = client.get_run(first["mlflow"]["run_id"])
    assert run.data.tags["gate.promoted"] == "true"
    assert run.data.params["workers"] == "1"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report", *STAGES} <= artifacts
    seed_run = client.get_run(first["mlflow"]["seed_run_ids"][0])
    assert seed_run.data.tags["mlflow.parentRunId"] == run.info.run_id
    epochs = client.get_metric_history(seed_run.info.run_id, "lightgcn.loss")
    assert [m.step for m in epochs] == list(range(TINY["lightgcn"]["epochs"]))

    # A second set, on two workers, that learned nothing: registered, refused by the gate.
    second = _train(settings, tmp_path / "second", 2, UNTRAINED)
    assert second["config"]["workers"] == 2
    refused = second["gate"]
    assert refused["candidate"] < gate["candidate"], "the untrained set should be worse"
    assert not refused["promoted"] and refused["champion_set"] == first["set_id"]
    assert refused["champion"] == pytest.approx(gate["candidate"])
    champion = find_champion_set(client)
    assert champion is not None and champion.set_id == first["set_id"]
    for stage in STAGES:
        version = client.get_model_version(REGISTERED_NAMES[stage], refused["versions"][stage])
        assert str(version.version) == "2"
        assert version.tags["model_set"] == second["set_id"]
        assert version.tags["promoted"] == "false"
    assert client.get_run(second["mlflow"]["run_id"]).data.tags["gate.promoted"] == "false"
