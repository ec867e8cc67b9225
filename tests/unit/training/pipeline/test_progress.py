"""`streamrec train` logs each stage's epochs while Ray Train runs, read from MLflow."""

from __future__ import annotations

from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Metric

from training.pipeline import _EpochProgress


def test_each_epoch_is_logged_once_as_rank_zero_reports_it(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("progress", artifact_location=str(tmp_path / "a"))
    run_id = client.create_run(experiment).info.run_id

    def epoch(key: str, step: int, value: float) -> None:
        client.log_batch(run_id, metrics=[Metric(key, value, 0, step)])

    progress = _EpochProgress(uri, {0: run_id})
    assert progress.poll() == []
    epoch("lightgcn.loss", 0, 0.9)
    epoch("lightgcn.loss", 1, 0.5)
    epoch("lightgcn.recall_at_50", 1, 0.2)  # not a loss: not a line
    lines = progress.poll()
    assert [line.split(" (")[0] for line in lines] == [
        "train: seed 0 lightgcn epoch 1: loss 0.9000",
        "train: seed 0 lightgcn epoch 2: loss 0.5000",
    ]
    assert progress.poll() == []  # nothing new, nothing repeated
    epoch("din.loss", 0, 0.7)
    assert [line.split(" (")[0] for line in progress.poll()] == [
        "train: seed 0 din epoch 1: loss 0.7000"
    ]
