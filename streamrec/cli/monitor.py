"""``streamrec monitor``: drift and online quality of live traffic against the serving
set, and the retrain they trigger."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import threading
from pathlib import Path
from typing import Any

from streamrec.settings import Settings


def _monitor(args: argparse.Namespace, settings: Settings) -> int:
    from streamrec.infra.experiments import RedisExperimentStore
    from streamrec.infra.metrics import MetricsServer
    from streams.archiver import install_stop_signals
    from training import registry
    from training.monitoring.metrics import MonitorMetrics
    from training.monitoring.monitor import MonitorConfig
    from training.monitoring.policy import PolicyConfig
    from training.monitoring.reference import champion
    from training.monitoring.runner import CanaryDriver, CanaryPolicy, Retrainer, run_monitor

    window = args.window_events or settings.monitor_window_events
    try:
        config = MonitorConfig(
            window_events=window,
            step_events=args.step_events or window,
            quality_window=args.quality_window,
            policy=PolicyConfig(
                windows=args.persist,
                drift_share=args.drift_share,
                degradation_margin=args.margin,
                cooldown_events=args.cooldown_events,
            ),
        )
        if args.retrain_hyper:
            json.loads(args.retrain_hyper)
        if not 0.0 <= args.canary_share < 1.0:
            raise ValueError(f"--canary-share must be in [0, 1), got {args.canary_share}")
    except ValueError as exc:
        print(f"streamrec monitor: {exc}", file=sys.stderr)
        return 2
    retrain_args = shlex.split(args.retrain_args)
    if args.retrain_hyper:
        retrain_args += ["--hyper", args.retrain_hyper]
    client = registry.configure(settings)
    metrics = MonitorMetrics.create()
    stop = threading.Event()
    restore = install_stop_signals(stop)
    server = MetricsServer(metrics.registry, settings.monitor_metrics_port, settings.metrics_host)
    workdir = args.work_dir or settings.state_dir / "monitor"
    retrainer = Retrainer(settings, retrain_args, Path(workdir))
    canary = None
    if args.canary_share > 0:
        redis_url = settings.redis_connection_url
        if redis_url is None:
            print("streamrec monitor: a canary needs Redis (or --canary-share 0)", file=sys.stderr)
            return 2
        policy = CanaryPolicy(
            share=args.canary_share,
            margin=args.canary_margin,
            min_lists=args.canary_min_lists,
        )
        store = RedisExperimentStore(redis_url, settings.topic_prefix)
        canary = CanaryDriver(policy, store, client)
    try:
        state = run_monitor(
            settings, config, metrics, retrainer, lambda: champion(client), stop, canary
        )
    finally:
        server.close()
        restore()
    print(f"monitor: {state.events_seen} interactions read, {len(state.decisions)} decisions")
    return 0


def register(sub: Any) -> None:
    monitor = sub.add_parser(
        "monitor",
        help="watch live traffic against the serving set; retrain when drift or "
        "degradation persists",
        description="Read interactions, served lists and clicks as they arrive. Every "
        "--step-events interactions, compare the newest --window-events with the champion "
        "set's reference distributions (saved with the set by `streamrec train`: action "
        "mix, item popularity, category mix, user activity, click positions) and its "
        "online NDCG@10 (each user's next new item ranked in the last list served to them) "
        "with its offline figure. When a signal persists --persist checks, run "
        "`streamrec retrain` and log the trigger and the gate's decision to the monitor "
        "topic. Metrics on STREAMREC_MONITOR_METRICS_PORT. Runs until SIGTERM.",
    )
    monitor.add_argument(
        "--window-events",
        type=int,
        metavar="N",
        help="live interactions per compared window (default STREAMREC_MONITOR_WINDOW_EVENTS, "
        "the size the references were measured for)",
    )
    monitor.add_argument(
        "--step-events",
        type=int,
        metavar="N",
        help="interactions between checks (default: the window, so windows do not overlap)",
    )
    monitor.add_argument(
        "--drift-share",
        type=float,
        default=0.5,
        metavar="F",
        help="a window drifts when at least this share of its columns drift",
    )
    monitor.add_argument(
        "--quality-window",
        type=int,
        default=500,
        metavar="N",
        help="scored interactions behind the online NDCG@10 and Hit@10",
    )
    monitor.add_argument(
        "--persist",
        type=int,
        default=3,
        metavar="K",
        help="consecutive checks a signal must show before a retrain",
    )
    monitor.add_argument(
        "--margin",
        type=float,
        default=0.05,
        help="degradation: online NDCG@10 below the offline figure by more than this",
    )
    monitor.add_argument(
        "--cooldown-events",
        type=int,
        default=0,
        metavar="N",
        help="interactions after a retrain before another may trigger",
    )
    monitor.add_argument(
        "--retrain-hyper", metavar="JSON", help="hyper-parameter overrides for the retrain"
    )
    monitor.add_argument(
        "--retrain-args",
        default="",
        metavar="ARGS",
        help="more `streamrec retrain` options, e.g. '--streaming-events 0 --no-bpr'",
    )
    monitor.add_argument(
        "--work-dir", type=Path, metavar="DIR", help="retrain reports and logs (default: state)"
    )
    monitor.add_argument(
        "--canary-share",
        type=float,
        default=0.1,
        help="a retrained set that becomes `challenger` gets its canary at once with this "
        "share of the users, and the monitor decides it (0: leave it to `streamrec canary`)",
    )
    monitor.add_argument(
        "--canary-margin", type=float, default=0.01, help="the canary's absolute CTR margin"
    )
    monitor.add_argument(
        "--canary-min-lists",
        type=int,
        default=1000,
        metavar="N",
        help="lists per side before the canary is decided",
    )
    monitor.set_defaults(func=_monitor)
