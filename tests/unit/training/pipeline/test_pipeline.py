"""``run_training`` end to end without Ray (the in-process loop stands in for the Ray Train
run; the Ray path itself is covered by tests/integration/test_train_command.py): archive in,
report, MLflow runs and the gated registry out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from serving.loading import build_cascade
from streamrec.infra.model_store import STAGES, find_champion_set, read_folder
from streamrec.settings import Settings
from streams.archiver import part_name, topic_dir, write_atomically
from streams.drift_reference import Reference
from streams.events import Topics
from training import pipeline
from training.data.examples import archived_table
from training.evaluation.prequential import DIN_SCORES_KEY
from training.fit.hyper import Hyper
from training.fit.stages import train_all
from training.monitoring.reference import REFERENCE_ARTIFACT

HOUR = 3_600_000
TINY = {
    "lightgcn": {"dim": 8, "layers": 1, "epochs": 3, "batch_size": 256},
    "din": {"item_dim": 8, "category_dim": 4, "attention_hidden": 8, "mlp_hidden": [8]},
    "ranknet": {"hidden": [8], "epochs": 3},
}


def _archive(settings: Settings, n_events: int = 2500, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 60, n_events)
    items = np.minimum(rng.zipf(1.3, n_events) - 1, 79)
    events = pd.DataFrame(
        {
            "event_id": [f"e{n}" for n in range(n_events)],
            "event_time": 1_700_000_000_000 + np.arange(n_events) * HOUR,
            "user_id": [f"u{u}" for u in users],
            "item_id": [f"i{i}" for i in items],
            "action": "view",
            "rating": None,
        }
    )
    table = archived_table(events)
    folder = topic_dir(settings.data_dir, Topics(settings.topic_prefix).interactions)
    write_atomically(table, folder / part_name(0, 0, table.num_rows - 1))
    return events


def _in_process(
    settings: Settings, data: Any, hyper: Any, seeds: Any, run_ids: Any, workers: int
) -> dict[int, Any]:
    hooks = {
        seed: pipeline._epoch_logger(settings.mlflow_uri, run)
        for seed, run in zip(seeds, run_ids, strict=True)
    }
    return {seed: train_all(data, hyper, seed, on_epoch=hooks[seed]) for seed in seeds}


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setattr(pipeline, "train_through_ray", _in_process)
    return Settings(
        data_dir=tmp_path / "data", state_dir=tmp_path / "state", topic_prefix="p."
    ).resolved()


def test_an_empty_archive_is_a_clear_error(settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(
        pipeline.TrainingInputError, match="no archived interactions .* archive --once"
    ):
        pipeline.run_training(settings, pipeline.TrainOptions(report_dir=tmp_path / "r"))


def test_too_few_events_before_until_is_a_clear_error(settings: Settings, tmp_path: Path) -> None:
    events = _archive(settings)
    until = int(events["event_time"].iloc[10])
    options = pipeline.TrainOptions(until_ms=until, report_dir=tmp_path / "r")
    with pytest.raises(pipeline.TrainingInputError, match="only 10 archived interactions before"):
        pipeline.run_training(settings, options)


def test_unknown_hyper_parameters_are_refused(settings: Settings, tmp_path: Path) -> None:
    _archive(settings)
    options = pipeline.TrainOptions(hyper={"lightgcn": {"epocs": 1}}, report_dir=tmp_path / "r")
    with pytest.raises(ValueError, match="unknown hyper-parameter 'epocs'"):
        pipeline.run_training(settings, options)


def test_two_seeds_report_and_the_gate_refuses_a_worse_set(
    settings: Settings, tmp_path: Path
) -> None:
    events = _archive(settings)
    until = int(events["event_time"].iloc[2000])
    options = pipeline.TrainOptions(
        until_ms=until,
        seeds=2,
        hyper=TINY,
        report_dir=tmp_path / "first",
        streaming_events=0,  # the static gate: promoted, as no champion exists
        bpr=False,
    )
    first = pipeline.run_training(settings, options)
    report = json.loads(first.json_path.read_text())
    assert report["source"]["interactions"] == 2000  # --until cut the archive
    assert report["cascade"]["n"] == 2 and len(report["cascade"]["runs"]) == 2
    assert "ndcg@10" in report["cascade"]["std"]["cascade"]
    assert report["streaming"] is None
    assert report["gate"]["promoted"]
    client = MlflowClient(tracking_uri=settings.mlflow_uri)
    champion = find_champion_set(client)
    assert champion is not None and champion.set_id == report["set_id"]
    # The registered LightGCN folder carries the item prior and the cascade config (its
    # recall blend weights), and the API's loader serves them.
    folders = {
        stage: read_folder(Path(mlflow.artifacts.download_artifacts(champion.sources[stage])))
        for stage in STAGES
    }
    served = build_cascade(champion.label, champion.set_id, folders)
    assert served.models.item_prior is not None
    assert served.models.item_prior.shape == (len(served.item_ids),)
    assert served.config.prior_weight == Hyper().cascade.prior_weight
    assert served.config.final_recall_weight == Hyper().cascade.final_recall_weight
    for seed_run in report["mlflow"]["seed_run_ids"]:
        history = client.get_metric_history(seed_run, "lightgcn.loss")
        assert [m.step for m in history] == [0, 1, 2]

    # The same log and seeds, with the measured metric made worse by the test hook.
    worse = pipeline.TrainOptions(
        until_ms=until,
        hyper=TINY,
        report_dir=tmp_path / "second",
        streaming_events=100,
        bpr=False,
        gate_metric_override=lambda metric: metric - 1.0,
    )
    second = pipeline.run_training(settings, worse).report
    assert not second["gate"]["promoted"]
    assert second["gate"]["champion_set"] == report["set_id"]
    # Prequential: the test table, and the validation period the gate read.
    assert 0 < second["streaming"]["all"]["n_events"] <= 100
    assert "cascade live" in second["streaming"]["validation"]["all"]["arms"]
    assert second["gate"]["metric_name"] == pipeline.PREQUENTIAL_GATE_METRIC
    champion = find_champion_set(client)
    assert champion is not None and champion.set_id == report["set_id"]
    assert set(second["gate"]["versions"]) == set(STAGES)
    assert "Not promoted" in second_md(tmp_path)
    # The monitor's DIN reference: DIN's logits of the items the cascade served in the
    # validation replay (none without one); the report does not carry them.
    assert DIN_SCORES_KEY not in second["streaming"]["validation"]
    served_din = _reference(client, second["mlflow"]["run_id"]).din_scores
    assert served_din and all(isinstance(x, float) for x in served_din)
    assert _reference(client, report["mlflow"]["run_id"]).din_scores == []


def _reference(client: MlflowClient, run_id: str) -> Reference:
    path = client.download_artifacts(run_id, REFERENCE_ARTIFACT)
    return Reference.from_json(Path(path).read_text())


def second_md(tmp_path: Path) -> str:
    return (tmp_path / "second" / "eval.md").read_text()


def test_the_command_line_refuses_bad_arguments(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamrec.cli import main

    monkeypatch.setenv("STREAMREC_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("STREAMREC_STATE_DIR", str(tmp_path / "state"))
    assert main(["train", "--hyper", "{not json"]) == 2
    assert "streamrec train:" in capsys.readouterr().err
    assert main(["train", "--until", "yesterday"]) == 2
    assert "neither epoch seconds nor an ISO 8601 time" in capsys.readouterr().err
    assert main(["train", "--workers", "0"]) == 2
    assert "--workers must be >= 1" in capsys.readouterr().err
    assert main(["train", "--report-dir", str(tmp_path / "r")]) == 2
    assert "no archived interactions" in capsys.readouterr().err
