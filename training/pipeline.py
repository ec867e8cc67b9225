"""``streamrec train``: the archived log → three trained stages → evaluation → MLflow registry.

1. Read the archived interactions and clicks (``streams.archiver``; never the raw dataset),
   events before ``--until`` only, and build every point-in-time tensor
   (:func:`training.fit.stages.prepare`).
2. Train through Ray Train: ONE ``TorchTrainer`` run whose workers train the three stages
   in order, for every seed (each stage is data-parallel across the workers; starting
   Ray Train's actors is the expensive part, see :mod:`training.fit.distributed`). Rank 0
   logs every epoch's metrics to the seed's MLflow run as they happen and sends the
   trained sets back in the run's checkpoint.
3. Evaluate on the same split: the baselines, every stage (:func:`training.fit.stages.
   evaluate_set`, mean and spread over seeds), and the prequential evaluation of the first
   seed's set as the API loads it (:mod:`training.prequential_run`).
4. Log parameters, the report (``eval.json`` + ``eval.md``) and the three stage folders of
   the first seed to MLflow, register them as one model set and gate it on the validation
   period scored prequentially: the set becomes ``champion`` only if its live cascade
   beats every live baseline there (paired Wilcoxon p < 0.05) and the champion set's
   validation metric. A refused set leaves the API on what it served before (the
   live item-kNN baseline, ``baseline-item-knn-v1``, while no set was ever promoted).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from streamrec.settings import Settings
from streamrec.times import format_ms
from training.forked import forked_map, usable_cpus

log = logging.getLogger(__name__)

GATE_METRIC = "validation_cascade_ndcg@10"  # static split: only when prequential is skipped
PREQUENTIAL_GATE_METRIC = "validation_prequential_ndcg@10"
MIN_EVENTS = 50  # fewer cannot fill a train / validation / test split meaningfully
TRAINED_FILE = "trained-seed{seed}.pt"
PARENT_RUN_TAG = "mlflow.parentRunId"


class TrainingInputError(ValueError):
    """The archive cannot be trained on (empty, or too few events before --until)."""


@dataclass
class TrainOptions:
    until_ms: int | None = None
    workers: int = 1
    seeds: int = 1
    report_dir: Path = Path("reports")
    hyper: dict[str, Any] | None = None
    train_fraction: float = 0.8
    validation_fraction: float = 0.1
    streaming_events: int = 5000  # test events of the prequential evaluation; 0 skips it
    items_path: Path | None = None  # item catalogue (categories); optional
    experiment: str = "streamrec"
    bpr: bool = True  # the BPR-MF baseline (one fit per seed)
    # processes the prequential replays share their scored events among (the machine's
    # cores, at most 4: each holds its own copy of the folded state)
    replay_processes: int = field(default_factory=lambda: min(4, usable_cpus()))
    # Test-only: replaces the measured gate metric, to drive the gate deterministically.
    gate_metric_override: Callable[[float], float] | None = field(default=None, repr=False)


@dataclass
class TrainResult:
    report: dict[str, Any]
    json_path: Path
    markdown_path: Path
    run_id: str


# -- the archive -----------------------------------------------------------------------------


def read_archive(
    settings: Settings, until_ms: int | None
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Archived interactions (and clicks, if any) of this topic prefix before ``until_ms``."""
    from streams.archiver import ARCHIVE_DIR, read_clicks, read_interactions

    interactions = read_interactions(settings.data_dir, settings.topic_prefix, until_ms)
    where = Path(settings.data_dir) / ARCHIVE_DIR
    if interactions.num_rows == 0:
        scope = f" before {format_ms(until_ms)}" if until_ms is not None else ""
        raise TrainingInputError(
            f"no archived interactions{scope} for topic prefix {settings.topic_prefix!r} "
            f"under {where}; replay or send events, then run `streamrec archive --once`"
        )
    if interactions.num_rows < MIN_EVENTS:
        raise TrainingInputError(
            f"only {interactions.num_rows} archived interactions"
            + (f" before {format_ms(until_ms)}" if until_ms is not None else "")
            + f"; training needs at least {MIN_EVENTS}"
        )
    events = interactions.to_pandas()
    clicks_table = read_clicks(settings.data_dir, settings.topic_prefix, until_ms)
    clicks = clicks_table.to_pandas() if clicks_table.num_rows else None
    return events, clicks


# -- training inside Ray Train ---------------------------------------------------------------


def _metric_name(stage: str, name: str) -> str:
    return f"{stage}.{name}".replace("@", "_at_")


def _epoch_logger(tracking_uri: str, run_id: str) -> Callable[[str, int, dict[str, float]], None]:
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(tracking_uri=tracking_uri)

    def on_epoch(stage: str, epoch: int, metrics: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        batch = [
            Metric(_metric_name(stage, name), float(value), now, epoch)
            for name, value in metrics.items()
            if isinstance(value, int | float) and np.isfinite(value)
        ]
        if batch:
            client.log_batch(run_id, metrics=batch)

    return on_epoch


def train_stages_loop(config: dict[str, Any]) -> None:
    """One Ray Train worker: every seed's three stages, in order, as one DDP rank."""
    import ray
    import ray.train

    from training.fit.stages import Parallel, train_all

    context = ray.train.get_context()
    parallel = Parallel(context.get_world_rank(), context.get_world_size())
    started = time.monotonic()
    data = ray.get(config["data"][0])  # wrapped in a list, so Ray hands over the reference
    handed_over = time.monotonic() - started
    trained = {}
    for seed, run_id in zip(config["seeds"], config["run_ids"], strict=True):
        hook = _epoch_logger(config["tracking_uri"], run_id) if parallel.rank == 0 else None
        started = time.monotonic()
        trained[seed] = train_all(data, config["hyper"], seed, parallel, hook)
        seconds = {"train": time.monotonic() - started, "data": handed_over}
        trained[seed].history["seconds"] = [seconds]
    metrics = {"world_size": parallel.world_size, "seeds": len(trained)}
    if parallel.rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as folder:
        for seed, trained_set in trained.items():
            torch.save(trained_set, Path(folder) / TRAINED_FILE.format(seed=seed))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


class _EpochProgress:
    """Logs each stage's epochs while Ray Train runs (the workers' own output does not reach
    the driver): rank 0 writes every epoch's loss to the seed's MLflow run, and a thread here
    reads those runs every ``interval`` seconds, so the lines work on a Ray cluster too."""

    def __init__(self, tracking_uri: str, run_ids: dict[int, str], interval: float = 2.0) -> None:
        import threading

        self._tracking_uri = tracking_uri
        self._run_ids = run_ids
        self._interval = interval
        self._seen: dict[tuple[int, str], int] = {}
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="train-progress", daemon=True)

    def __enter__(self) -> _EpochProgress:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.poll()  # the last epochs, logged after the previous read

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.poll()
            except Exception as exc:  # progress is best effort: never fail the training
                log.debug("train: reading progress failed: %s", exc)

    def poll(self) -> list[str]:
        """Log (and return) a line per epoch finished since the last poll."""
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=self._tracking_uri)
        lines = []
        for seed, run_id in self._run_ids.items():
            latest = client.get_run(run_id).data.metrics
            for key in sorted(k for k in latest if k.endswith(".loss")):
                history = client.get_metric_history(run_id, key)
                done = self._seen.get((seed, key), -1)
                for metric in sorted(history, key=lambda m: m.step):
                    if metric.step <= done:
                        continue
                    stage = key.removesuffix(".loss")
                    lines.append(
                        f"train: seed {seed} {stage} epoch {metric.step + 1}:"
                        f" loss {metric.value:.4f} ({time.monotonic() - self._started:.0f} s)"
                    )
                    done = metric.step
                self._seen[(seed, key)] = done
        for line in lines:
            log.info(line)
        return lines


def train_through_ray(
    settings: Settings,
    data: Any,
    hyper: Any,  # training.fit.hyper.Hyper, or its overrides
    seeds: Sequence[int],
    run_ids: Sequence[str],
    workers: int,
) -> dict[int, Any]:
    """Train every seed's set in one Ray Train run; returns seed -> ``TrainedSet``."""
    import ray

    from training.fit.distributed import fit, init_ray, ray_address

    started = time.monotonic()
    init_ray(settings, workers)
    log.info("train: Ray started in %.1f s (%d worker(s))", time.monotonic() - started, workers)
    try:
        started = time.monotonic()
        stored = ray.put(data)
        log.info(
            "train: the training data went into Ray's object store in %.1f s",
            time.monotonic() - started,
        )
        config = {
            "data": [stored],
            "hyper": hyper,
            "seeds": list(seeds),
            "run_ids": list(run_ids),
            "tracking_uri": settings.mlflow_uri,
        }
        progress = _EpochProgress(settings.mlflow_uri, dict(zip(seeds, run_ids, strict=True)))

        def load(folder: Path) -> dict[int, Any]:
            return {
                seed: torch.load(folder / TRAINED_FILE.format(seed=seed), weights_only=False)
                for seed in seeds
            }

        with progress:
            outcome = fit(
                settings,
                train_stages_loop,
                config,
                workers=workers,
                name="streamrec-train",
                load=load,
            )
        if outcome.loaded is None:
            raise RuntimeError("Ray Train finished without a checkpoint of the trained sets")
        if outcome.metrics.get("world_size") != workers:
            raise RuntimeError(
                f"trained on {outcome.metrics.get('world_size')} workers, not {workers}"
            )
        trained: dict[int, Any] = outcome.loaded
        spent = trained[seeds[0]].history["seconds"][0]
        log.info(
            "train: Ray Train's worker read the training data in %.1f s and trained every "
            "seed in %.1f s; the rest of Ray Train's time is Ray's (starting the worker, "
            "the checkpoint)",
            spent["data"],
            sum(trained[seed].history["seconds"][0]["train"] for seed in seeds),
        )
    finally:
        if not ray_address(settings):
            # A local Ray's processes (its TrainController among them) would idle beside
            # the evaluation, or outlive this process when training failed.
            ray.shutdown()
    return trained


# -- evaluation -------------------------------------------------------------------------------


def baseline_results(split: Any, seeds: Sequence[int], bpr: bool) -> dict[str, dict[str, Any]]:
    from training.evaluation.baselines import (
        BPRConfig,
        bpr_scorer,
        choose_knn_neighbours,
        non_learned_scorers,
    )
    from training.evaluation.evaluate import DEFAULT_KS, evaluate, evaluate_seeds

    results: dict[str, dict[str, Any]] = {}
    for name, scorer in non_learned_scorers(split, choose_knn_neighbours(split)).items():
        results[name] = {"mean": evaluate(scorer, split, ks=DEFAULT_KS)}
    if bpr:
        config = BPRConfig()
        runs = evaluate_seeds(lambda seed: bpr_scorer(split, config, seed), split, seeds=seeds)
        entry = {"mean": runs["mean"], **({"std": runs["std"]} if len(seeds) > 1 else {})}
        results[f"BPR-MF ({len(seeds)} seed{'s' if len(seeds) > 1 else ''})"] = entry
    return results


def gate_metric(validation: dict[str, Any]) -> float:
    value = validation.get("cascade", {}).get("ndcg@10")
    if value is None:
        raise RuntimeError("the validation period has no evaluated user; cannot gate the set")
    return float(value)


# -- MLflow -----------------------------------------------------------------------------------


def _flat_metrics(prefix: str, tree: Any, out: dict[str, float]) -> dict[str, float]:
    if isinstance(tree, dict):
        for key, value in tree.items():
            _flat_metrics(f"{prefix}.{key}" if prefix else str(key), value, out)
    elif isinstance(tree, int | float) and not isinstance(tree, bool) and np.isfinite(tree):
        # MLflow names allow alphanumerics, "_-. :/" only: "ndcg@10" -> "ndcg_at_10", and
        # arm names lose their parentheses ("item-kNN (tuned)" -> "item-kNN tuned").
        name = re.sub(r"[^\w\-. :/]", "", prefix.replace("@", "_at_"))
        out[name] = float(tree)
    return out


def _log_metrics(client: Any, run_id: str, metrics: dict[str, float]) -> None:
    """One request per 1,000 metrics (MLflow's batch limit) rather than one per metric."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(name, value, now, 0) for name, value in metrics.items()]
    for start in range(0, len(batch), 1000):
        client.log_batch(run_id, metrics=batch[start : start + 1000])


def _params(options: TrainOptions, hyper: dict[str, Any], seeds: Sequence[int]) -> dict[str, Any]:
    params: dict[str, Any] = {
        "workers": options.workers,
        "seeds": ",".join(map(str, seeds)),
        "until_ms": options.until_ms if options.until_ms is not None else "",
        "train_fraction": options.train_fraction,
        "validation_fraction": options.validation_fraction,
        "streaming_events": options.streaming_events,
    }
    return {**params, **_flat_params(hyper)}


def _flat_params(hyper: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in hyper.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            out.update(_flat_params(value, name))
        else:
            out[name] = value
    return out


def _log_reference(
    settings: Settings,
    options: TrainOptions,
    events: pd.DataFrame,
    clicks: pd.DataFrame | None,
    din: list[float],
) -> None:
    """The training window's distributions, saved with the set: what the monitor compares
    live traffic with while the set serves (``training.monitoring.reference``). ``din``:
    DIN's logits of what the set served in the validation replay (none without one)."""
    from streams.drift_monitor import catalogue_categories
    from training.monitoring.reference import log_reference, training_reference

    until = options.until_ms
    if until is None:
        until = int(events["event_time"].max()) + 1
    reference = training_reference(
        events,
        until_ms=until,
        window_events=settings.monitor_window_events,
        category_of=catalogue_categories(settings.data_dir, options.items_path),
        clicks=clicks,
        din=din,
    )
    log_reference(reference)


class _BesideRay:
    """One thread for work that runs while Ray Train trains, at the lowest CPU priority
    (Linux's nice is per thread). Ray raises its workers' niceness itself (the raylet's
    ``worker_niceness``: 19 under a ``nice``d train), so the thread still shares the cores
    with training: at 1M events the baselines and the fold to the cutoff (260 s) slowed
    Ray Train by about 110 s, a net ~150 s. Each call logs its own time; on leaving, an
    error in the block cancels what has not started (what has started finishes: a thread
    cannot be stopped).
    """

    def __init__(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="beside-ray", initializer=_lowest_priority
        )

    def submit(self, name: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        def timed() -> Any:
            started = time.monotonic()
            out = call(*args, **kwargs)
            log.info("train: %s took %.1f s (beside Ray Train)", name, time.monotonic() - started)
            return out

        return self._pool.submit(timed)

    def __enter__(self) -> _BesideRay:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: Any) -> None:
        self._pool.shutdown(wait=True, cancel_futures=kind is not None)


def _lowest_priority() -> None:
    with contextlib.suppress(OSError, AttributeError):  # not Linux: an ordinary thread
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


# -- the command ------------------------------------------------------------------------------


def run_training(settings: Settings, options: TrainOptions) -> TrainResult:
    import mlflow

    from training import registry
    from training.data.split import SplitConfig, split_summary
    from training.evaluation.new_users import new_user_bound
    from training.evaluation.prequential import (
        DIN_SCORES_KEY,
        PrequentialConfig,
        beats_baselines,
        fold_to_cutoff,
    )
    from training.evaluation.prequential_report import check_targets as prequential_targets
    from training.fit.hyper import Hyper
    from training.fit.stages import evaluate_set, prepare
    from training.prequential_run import evaluate_trained
    from training.report import check_targets, mean_and_spread, write_report
    from training.served_set import stage_folders

    if options.workers < 1:
        raise TrainingInputError(f"--workers must be >= 1, got {options.workers}")
    if options.seeds < 1:
        raise TrainingInputError(f"--seeds must be >= 1, got {options.seeds}")
    hyper = Hyper.read(options.hyper)  # refuses unknown or bad values before any work
    seeds = list(range(options.seeds))
    timings: dict[str, float] = {}
    started = clock = time.monotonic()

    def lap(step: str) -> None:
        nonlocal clock
        now = time.monotonic()
        timings[step] = now - clock
        clock = now
        log.info("train: %s took %.1f s", step, timings[step])

    events, clicks = read_archive(settings, options.until_ms)
    items = pd.read_parquet(options.items_path) if options.items_path else None
    lap("read archive")
    try:
        data = prepare(
            events,
            items,
            split=SplitConfig(options.train_fraction, options.validation_fraction),
            clicks=clicks,
            max_history=settings.recent_items_max,
        )
    except ValueError as exc:
        raise TrainingInputError(f"cannot build training sets from the archive: {exc}") from exc
    if len(data.split.test.users) == 0 or len(data.split.validation.users) == 0:
        raise TrainingInputError(
            f"{len(events)} archived interactions leave no user to evaluate in the "
            "validation or test period; archive more events or move --until later"
        )
    lap("prepare")

    client = registry.configure(settings, options.experiment)
    set_id = uuid.uuid4().hex[:12]
    with mlflow.start_run(run_name=f"train-{set_id}") as parent:
        run_id = parent.info.run_id
        mlflow.set_tags({"model_set": set_id, "command": "streamrec train"})
        mlflow.log_params(_params(options, hyper.as_dict(), seeds))
        seed_runs = [
            client.create_run(
                parent.info.experiment_id,
                run_name=f"seed-{seed}",
                tags={PARENT_RUN_TAG: run_id, "seed": str(seed), "model_set": set_id},
            ).info.run_id
            for seed in seeds
        ]
        prequential_config = PrequentialConfig(
            max_events=options.streaming_events,
            keep=settings.recent_items_max,
            processes=options.replay_processes,
        )
        with _BesideRay() as beside:
            # What needs no trained model runs beside Ray Train, in a thread of its own.
            baselines_done = beside.submit(
                "baselines", baseline_results, data.split, seeds, options.bpr
            )
            cutoff_done = (
                beside.submit(
                    "prequential fold to the cutoff",
                    fold_to_cutoff,
                    events,
                    data.split.item_ids,
                    data.split.train_end_ms,
                    clicks=clicks,
                    config=prequential_config,
                )
                if options.streaming_events > 0
                else None
            )
            trained = train_through_ray(settings, data, hyper, seeds, seed_runs, options.workers)
            lap("train (Ray Train)")
            baselines = baselines_done.result()
            at_cutoff = cutoff_done.result() if cutoff_done is not None else None
            lap("waiting for the work beside Ray Train")
        # Each seed's test and validation evaluations at once, a process each (each is
        # single-threaded work: 34 s a target at 1M events); forked once no other thread
        # works (a lock held by one at the fork would stay held in the child).
        evaluated = iter(
            forked_map(
                [
                    functools.partial(evaluate_set, trained[seed], data, target)
                    for seed in seeds
                    for target in ("test", "validation")
                ]
            )
        )
        test_runs, validation_runs = [], []
        for seed_run in seed_runs:
            test_runs.append(next(evaluated))
            validation_runs.append(next(evaluated))
            _log_metrics(client, seed_run, _flat_metrics("test", test_runs[-1], {}))
            _log_metrics(client, seed_run, _flat_metrics("validation", validation_runs[-1], {}))
            client.set_terminated(seed_run)
        lap("evaluate stages")
        streaming = None
        if at_cutoff is not None:
            streaming = evaluate_trained(
                trained[seeds[0]],
                data,
                events,
                prequential_config,
                clicks=clicks,
                at_cutoff=at_cutoff,
            )
            streaming["targets"] = prequential_targets(streaming)
            lap("prequential evaluation")
        # The monitor's DIN reference, kept out of the report (thousands of numbers).
        served_din = streaming["validation"].pop(DIN_SCORES_KEY, []) if streaming else []

        metric_name, metric, refused = GATE_METRIC, gate_metric(validation_runs[0]), None
        if streaming is not None:
            metric_name = PREQUENTIAL_GATE_METRIC
            metric = streaming["validation"]["all"]["arms"]["cascade live"]["ndcg@10"]
            refused = beats_baselines(streaming["validation"])
        if options.gate_metric_override is not None:
            metric = options.gate_metric_override(metric)
        with tempfile.TemporaryDirectory(prefix="streamrec-set-") as scratch:
            folders = stage_folders(
                trained[seeds[0]], set_id, Path(scratch), data.split.n_train_users
            )
            logged = {
                stage: registry.log_folder(folder, stage) for stage, folder in folders.items()
            }
        _log_reference(settings, options, events, clicks, served_din)
        lap("reference distributions")
        decision = registry.register_set_and_gate(
            client,
            set_id=set_id,
            models=logged,
            metric_name=metric_name,
            metric=metric,
            refused=refused,
            canary=settings.canary_promotion,
        )
        mlflow.set_tags(
            {
                "gate.promoted": str(decision.promoted).lower(),
                "gate.reason": decision.reason,
                "gate.champion_set": decision.champion_set or "",
                "gate.champion_metric": ""
                if decision.champion is None
                else repr(decision.champion),
            }
        )
        mlflow.log_metric(metric_name.replace("@", "_at_"), metric)
        lap("register and gate")
        timings["total"] = time.monotonic() - started

        report: dict[str, Any] = {
            "created_at": datetime.now(tz=UTC).isoformat(),
            "set_id": set_id,
            "source": {
                "topic_prefix": settings.topic_prefix,
                "until": format_ms(options.until_ms) if options.until_ms is not None else None,
                "interactions": int(len(events)),
                "clicks": int(len(clicks)) if clicks is not None else 0,
            },
            "config": {
                "workers": options.workers,
                "seeds": seeds,
                "hyper": hyper.as_dict(),
                "split": asdict(SplitConfig(options.train_fraction, options.validation_fraction)),
                "streaming_events": options.streaming_events,
            },
            "split": split_summary(data.split),
            "new_user_bound": new_user_bound(data.split),
            "baselines": baselines,
            "cascade": {**mean_and_spread(test_runs), "runs": test_runs},
            "validation": {**mean_and_spread(validation_runs), "runs": validation_runs},
            "streaming": streaming,
            "gate": decision.as_dict(),
            "mlflow": {
                "run_id": run_id,
                "seed_run_ids": seed_runs,
                "tracking_uri": settings.mlflow_uri,
            },
            "training_history": {str(s): trained[s].history for s in seeds},
            "timings": timings,
        }
        report["targets"] = check_targets(report)
        json_path, md_path = write_report(report, Path(options.report_dir))
        mlflow.log_artifact(str(json_path), artifact_path="report")
        mlflow.log_artifact(str(md_path), artifact_path="report")
        mlflow.log_metrics(
            {
                k: v
                for k, v in _flat_metrics("test", report["cascade"]["mean"], {}).items()
                if k.startswith(("test.cascade", "test.lightgcn", "test.din", "test.ranknet"))
            }
        )
        if streaming is not None:
            mlflow.log_metrics(_flat_metrics("prequential", streaming["all"]["arms"], {}))
    return TrainResult(report, json_path, md_path, run_id)


# -- the command line -------------------------------------------------------------------------


def train_command(args: Any, settings: Settings) -> int:
    import json
    import sys

    from streamrec.times import parse_time_ms

    try:
        hyper = json.loads(args.hyper) if args.hyper else None
        if hyper is not None and not isinstance(hyper, dict):
            raise ValueError("--hyper must be a JSON object")
        options = TrainOptions(
            until_ms=parse_time_ms(args.until) if args.until else None,
            workers=args.workers,
            seeds=args.seeds,
            report_dir=args.report_dir,
            hyper=hyper,
            train_fraction=args.train_fraction,
            validation_fraction=args.validation_fraction,
            streaming_events=args.streaming_events,
            items_path=args.items,
            bpr=not args.no_bpr,
        )
        if args.replay_processes is not None:
            if args.replay_processes < 1:
                raise ValueError("--replay-processes must be >= 1")
            options.replay_processes = args.replay_processes
        result = run_training(settings, options)
    except (TrainingInputError, ValueError) as exc:
        print(f"streamrec train: {exc}", file=sys.stderr)
        return 2
    report = result.report
    cascade = report["cascade"]["mean"]["cascade"]
    gate = report["gate"]
    print(f"model set {report['set_id']}: test cascade NDCG@10 {cascade['ndcg@10']:.4f}")
    if report.get("streaming"):
        s = report["streaming"]["all"]
        arms = s["arms"]
        print(
            f"prequential: cascade live NDCG@10 {arms['cascade live']['ndcg@10']:.4f}, frozen "
            f"{arms['cascade frozen']['ndcg@10']:.4f}, live item-kNN "
            f"{arms['item-kNN live']['ndcg@10']:.4f} over {s['n_events']} events"
        )
    outcome = "promoted" if gate["promoted"] else "not promoted"
    if gate.get("challenger"):
        outcome = "challenger: `streamrec promote` decides after its canary"
    print(f"gate: {gate['reason']} -> {outcome}")
    print(f"report: {result.json_path} {result.markdown_path}; MLflow run {result.run_id}")
    return 0
