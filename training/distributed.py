"""Data-parallel training through Ray Train (TorchTrainer, gloo on CPU).

The same call runs on this machine (a local Ray started on demand) or on a cluster
(``STREAMREC_RAY_ADDRESS``). A training loop is a plain function of its config that
calls ``report_epoch`` each epoch; the last checkpoint it reports carries the trained
weights back to the caller. Per-epoch curves belong in MLflow (logged by rank 0 from
inside the loop): Ray Train keeps only the reports that carry a checkpoint.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from streamrec.settings import Settings

TrainLoop = Callable[[dict[str, Any]], None]
WEIGHTS_FILE = "state_dict.pt"


@dataclass(frozen=True)
class TrainOutcome:
    metrics: dict[str, Any]  # the last report (Ray Train keeps only reports with checkpoints)
    state_dict: dict[str, torch.Tensor] | None


def report_epoch(metrics: dict[str, Any], model: torch.nn.Module | None = None) -> None:
    """From inside a training loop: report an epoch's metrics, and the weights (rank 0)."""
    import ray.train

    if model is None or ray.train.get_context().get_world_rank() != 0:
        ray.train.report(metrics)
        return
    inner = model.module if hasattr(model, "module") else model  # unwrap DDP
    with tempfile.TemporaryDirectory() as folder:
        torch.save(inner.state_dict(), Path(folder) / WEIGHTS_FILE)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


def fit(
    settings: Settings,
    train_loop: TrainLoop,
    config: dict[str, Any],
    *,
    workers: int = 1,
    name: str = "streamrec",
) -> TrainOutcome:
    """Run ``train_loop`` on ``workers`` data-parallel CPU workers and return the outcome."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    if not ray.is_initialized():
        ray.init(
            address=settings.ray_address or None,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    storage = settings.state_dir / "ray"
    storage.mkdir(parents=True, exist_ok=True)
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=False),
        torch_config=TorchConfig(backend="gloo"),
        run_config=RunConfig(name=name, storage_path=str(storage)),
    )
    result = trainer.fit()
    state_dict = None
    if result.checkpoint is not None:
        with result.checkpoint.as_directory() as folder:
            state_dict = torch.load(Path(folder) / WEIGHTS_FILE, weights_only=True)
    return TrainOutcome(dict(result.metrics or {}), state_dict)
