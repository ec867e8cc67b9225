"""Ray Train, for real (a local Ray): two data-parallel workers learn the planted weights.

One worker is the path `streamrec train` takes by default, run for real by
tests/integration/test_train_command.py and test_monitor_retrain.py."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from streamrec.settings import Settings
from training.fit.distributed import WEIGHTS_FILE, fit, report_epoch


def _planted_regression(config: dict[str, Any]) -> None:
    """y = 3·x0 − 2·x1; each worker trains on its own shard, DDP averages the gradients."""
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    generator = torch.Generator().manual_seed(config["seed"] + context.get_world_rank())
    x = torch.randn(512, 2, generator=generator)
    y = x @ torch.tensor([3.0, -2.0])
    torch.manual_seed(config["seed"])
    model = ray.train.torch.prepare_model(torch.nn.Linear(2, 1, bias=False))
    optimizer = torch.optim.SGD(model.parameters(), lr=config["lr"])
    first_loss = None
    for epoch in range(config["epochs"]):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x).squeeze(-1), y)
        loss.backward()
        optimizer.step()
        last = epoch == config["epochs"] - 1
        first_loss = first_loss if first_loss is not None else loss.item()
        metrics = {
            "epoch": epoch,
            "loss": loss.item(),
            "first_loss": first_loss,
            "world_size": context.get_world_size(),
        }
        report_epoch(metrics, model if last else None)  # weights once: checkpoints cost I/O


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    import ray

    yield
    ray.shutdown()


def test_data_parallel_training_learns_the_planted_weights(
    ray_local: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(state_dir=tmp_path / "state").resolved()
    # the driver's temporary directory: reading the checkpoint must leave nothing there
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    # Each step halves the error (lr 0.25 on unit-variance inputs): 15 reach 3e-5 of it.
    config = {"seed": 0, "epochs": 15, "lr": 0.25}
    outcome = fit(
        settings,
        _planted_regression,
        config,
        workers=2,
        load=lambda folder: sorted(path.name for path in folder.iterdir()),
    )
    assert outcome.loaded == [WEIGHTS_FILE]
    assert not [path.name for path in scratch.iterdir() if "checkpoint" in path.name]
    assert outcome.metrics["world_size"] == 2
    assert outcome.metrics["epoch"] == 14
    assert outcome.metrics["loss"] < 0.01 * outcome.metrics["first_loss"]
    assert outcome.state_dict is not None
    assert torch.allclose(outcome.state_dict["weight"], torch.tensor([[3.0, -2.0]]), atol=0.05)
