"""Data-parallel training through Ray Train (TorchTrainer, gloo on CPU).

The same call runs on this machine (a local Ray started on demand) or on a cluster
(``STREAMREC_RAY_ADDRESS``, else Ray's own ``RAY_ADDRESS``: ``ray_address``). A training
loop is a plain function of its config; the last checkpoint it reports carries what it
trained back to the caller. Per-epoch curves belong in MLflow (logged by rank 0 from
inside the loop): Ray Train keeps only the reports that carry a checkpoint.

Where the time of a ``fit`` goes on a small machine, and what is done about it (measured
on 2 busy cores; a fit of an empty loop took 27-46 s, ~135 s under load):

- every fit starts a controller actor and one actor per worker, and each of them imports
  torch and Ray Train (~10-15 s each under load): so callers should train everything in
  ONE fit (``training.pipeline`` trains the three stages, and every seed, in one run);
- started from ``uv run``, Ray ships the working directory and launches every worker
  through ``uv run`` (its uv runtime-env hook): turned off for a local Ray, whose workers
  share this machine's environment and only need the repository on ``PYTHONPATH``;
- the controller polls the workers every 2 s by default, which adds up to 2 s to every
  finish; 0.5 s here. The preemption watcher (cloud spot instances) is off locally.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from streamrec.infra.quiet import quiet_libraries
from streamrec.paths import REPO_ROOT
from streamrec.settings import Settings

log = logging.getLogger(__name__)
TrainLoop = Callable[[dict[str, Any]], None]
WEIGHTS_FILE = "state_dict.pt"
# Ray Train knobs for every process of the job (the controller reads them, not the driver).
_TRAIN_ENV = {
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
}
# A local Ray gives its raylet a fixed 30 s to register (ray._private.node, not
# configurable); on 2 cores at load average 15-20 that is not always enough, and a 1M-event
# `streamrec train` then failed after its 9-minute data preparation. Starting again works.
LOCAL_START_ATTEMPTS = 3
# What a cluster does not need of the repository when it is shipped as the working dir.
_SHIP_EXCLUDES = [".git", ".venv", "var", "reports", "**/__pycache__", "*.parquet"]


@dataclass(frozen=True)
class TrainOutcome:
    metrics: dict[str, Any]  # the last report (Ray Train keeps only reports with checkpoints)
    state_dict: dict[str, torch.Tensor] | None
    loaded: Any = None  # what ``fit``'s ``load`` read from the last checkpoint, if any


def report_epoch(metrics: dict[str, Any], model: torch.nn.Module | None = None) -> None:
    """From inside a training loop: report an epoch's metrics, and the weights (rank 0)."""
    import ray.train

    if model is None or ray.train.get_context().get_world_rank() != 0:
        ray.train.report(metrics)
        return
    inner: torch.nn.Module = getattr(model, "module", model)  # unwrap DDP
    with tempfile.TemporaryDirectory() as folder:
        torch.save(inner.state_dict(), Path(folder) / WEIGHTS_FILE)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


def local_cpus(workers: int) -> int:
    return max(workers, os.cpu_count() or 1)


def ray_address(settings: Settings) -> str:
    """The Ray cluster to attach to, empty for a local Ray started here.

    ``STREAMREC_RAY_ADDRESS`` first, else Ray's own ``RAY_ADDRESS``: `ray job submit` sets
    it for the driver it starts, and it is what Ray tells a user to export after
    `ray start --head`. Passing ``num_cpus`` to ``ray.init`` while it is set would make Ray
    refuse to connect, so it must choose the cluster path here too.
    """
    return settings.ray_address or os.environ.get("RAY_ADDRESS", "")


def init_ray(settings: Settings, workers: int = 1) -> None:
    """Connect to the configured cluster, or start a lean local Ray; no-op if connected."""
    import ray

    if ray.is_initialized():
        return
    quiet_libraries()
    address = ray_address(settings)
    if address:
        ray.init(
            address=address,
            runtime_env={
                "working_dir": str(REPO_ROOT),
                "excludes": _SHIP_EXCLUDES,
                "env_vars": dict(_TRAIN_ENV),
            },
            log_to_driver=False,
            configure_logging=False,
        )
        return
    # Don't re-launch workers through `uv run`: Ray reads this flag once, at import, into
    # a module constant that ray.init consults; the environment variable covers children.
    from ray._private import ray_constants

    os.environ["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] = "0"
    ray_constants.RAY_ENABLE_UV_RUN_RUNTIME_ENV = False
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    for attempt in range(1, LOCAL_START_ATTEMPTS + 1):
        try:
            ray.init(
                num_cpus=local_cpus(workers),
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
                runtime_env={"env_vars": {**_TRAIN_ENV, "PYTHONPATH": path}},
            )
            return
        except Exception as exc:  # Ray raises a bare Exception for this one
            if not _startup_timed_out(exc) or attempt == LOCAL_START_ATTEMPTS:
                raise
            log.warning(
                "train: the local Ray node did not register within Ray's fixed 30 s "
                "(attempt %d of %d, a busy machine); starting it again",
                attempt,
                LOCAL_START_ATTEMPTS,
            )
            ray.shutdown()  # the half-started GCS and raylet of this attempt


def _startup_timed_out(exc: BaseException) -> bool:
    """Ray's own words when its raylet did not register with the GCS in time."""
    return "timed out during startup" in str(exc)


def fit(
    settings: Settings,
    train_loop: TrainLoop,
    config: dict[str, Any],
    *,
    workers: int = 1,
    name: str = "streamrec",
    load: Callable[[Path], Any] | None = None,
) -> TrainOutcome:
    """Run ``train_loop`` on ``workers`` data-parallel CPU workers and return the outcome.

    Locally each worker gets an equal share of the CPUs (Ray sets its torch threads to
    that share); on a cluster, one CPU each. ``load`` reads what it needs from the last
    checkpoint's folder while it exists: the folder in the run's storage, or a temporary
    copy of a remote one that is removed afterwards (``Checkpoint.to_directory`` left a
    copy in the temporary directory on every run).
    """
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    init_ray(settings, workers)
    cpus = 1 if ray_address(settings) else max(1, local_cpus(workers) // workers)
    storage = settings.state_dir / "ray"
    storage.mkdir(parents=True, exist_ok=True)
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=config,
        scaling_config=ScalingConfig(
            num_workers=workers, use_gpu=False, resources_per_worker={"CPU": cpus}
        ),
        torch_config=TorchConfig(backend="gloo"),
        run_config=RunConfig(name=name, storage_path=str(storage)),
    )
    result = trainer.fit()
    state_dict = None
    loaded = None
    if result.checkpoint is not None:
        with result.checkpoint.as_directory() as folder:
            weights = Path(folder) / WEIGHTS_FILE
            if weights.exists():
                state_dict = torch.load(weights, weights_only=True)
            if load is not None:
                loaded = load(Path(folder))
    return TrainOutcome(dict(result.metrics or {}), state_dict, loaded)
