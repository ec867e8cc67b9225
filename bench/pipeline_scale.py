"""The whole pipeline at the mission's scale, stage by stage: prepare, replay, worker,
archive, train, serve, load.

    nice .venv/bin/python bench/pipeline_scale.py --events 1e6      # about 30-40 minutes
    nice .venv/bin/python bench/pipeline_scale.py --events 1e5      # a quick run
    nice .venv/bin/python bench/pipeline_scale.py --events 1e6 --until worker

Needs the services (`streamrec services up`) and vegeta (`make install-vegeta`). Every
stage is the `streamrec` command an operator runs, as a child process with these
settings, on fresh topics (a new prefix, deleted afterwards) and a scratch data and state
directory (MLflow's SQLite, the archive, Ray's storage):

1. ``data prepare synthetic:users=U,items=I,events=E,seed=0,session=..,switchers=..``;
2. ``replay synthetic --speed max`` into Kafka (the workers stopped);
3. ``worker``: from its start until its consumer group has no lag on any topic;
4. ``archive --once``: the topics into the Parquet event log;
5. ``train`` (three stages through Ray Train), with ``--train-args`` passed on;
6. ``serve`` with the trained set from the MLflow registry (the bench moves ``champion``
   to it if the gate refused it, and says so) in ``--api-workers`` processes, warmed up
   (500 requests per process), then vegeta at ``--rates`` for ``--seconds`` each
   (``bench/open_loop.py``), every request for a user not asked for before in the stage
   (``FreshUsers``: each list is computed, none is a kept answer); the CPU seconds of
   each serve row are the API's during that row.

``--until STAGE`` stops after that stage (``worker``: the worker's memory alone, with its
resident set at each tenth of the log committed). For each stage: wall seconds, CPU
seconds of the command and everything it started (psutil, ``bench/process_stats.py``),
the peak resident memory, and the load average.
Prints a table with the targets of issue 20 §3 and writes it all as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pyarrow.parquet as pq

from bench.open_loop import attack
from bench.process_stats import TreeSampler, peak_process_rss, peak_rss
from bench.stack import _wait_ready
from streamrec.infra.lag import consumer_lag
from streamrec.infra.processes import free_port, run_streamrec, streamrec_process
from streamrec.paths import dataset_events
from streamrec.settings import Settings, load_settings
from streams.events import Topics
from streams.topics import delete_topics, ensure_topics

GIB = 1024**3
MEMORY_TARGET = 2 * GIB
# Issue 20 §3: prepare + replay of 1M events under a minute together; train under 20 min.
TRAIN_TARGET_S = 20 * 60.0
SYNTHETIC_SHAPE = "seed=0,zipf=1.0,session=8,switchers=0.05,drift=1.0"
# The stages in the order they run; ``--until`` names the last one to run.
STAGES = ("prepare", "replay", "worker", "archive", "train", "serve")


@dataclass
class Stage:
    """One measured stage; ``extra`` holds what only this stage has."""

    name: str
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss_bytes: int = 0  # the measured process tree's, summed at one sample
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    extra: dict[str, Any] = field(default_factory=dict)


# -- the parts with logic (unit-tested) ------------------------------------------------------


def stage_seconds(epochs: dict[str, list[int]], worker_seconds: float) -> dict[str, float]:
    """Seconds per training stage from the epoch timestamps (ms) rank 0 logged to MLflow.

    Stages run one after another, so a stage took from the previous stage's last epoch to
    its own last; the first from the start of the worker's training, which is its last
    epoch's stamp minus the worker's own total (``worker_seconds``).
    """
    order = sorted((stamps for stamps in epochs.items() if stamps[1]), key=lambda s: min(s[1]))
    if not order:
        return {}
    end_ms = max(order[-1][1])
    previous = end_ms - worker_seconds * 1000
    seconds = {}
    for stage, stamps in order:
        last = max(stamps)
        seconds[stage] = max(0.0, (last - previous) / 1000)
        previous = last
    return seconds


def ray_log_seconds(output: str) -> dict[str, float]:
    """The timings `streamrec train` logs: Ray's start-up and each step of the pipeline."""
    found = {}
    started = re.search(r"train: Ray started in ([\d.]+) s", output)
    if started:
        found["ray start"] = float(started.group(1))
    for step, value in re.findall(r"train: (.+?) took ([\d.]+) s", output):
        found[step] = float(value)
    return found


def stops_after(stage: str, until: str) -> bool:
    """Whether ``stage`` is the last to run when the run goes ``until`` that stage."""
    return STAGES.index(stage) >= STAGES.index(until)


def memory_mark(folded: int, step: int, marks: dict[int, float], rss_mib: float) -> None:
    """Record the resident set the first time ``folded`` events reach a multiple of
    ``step`` (one figure per step, however often the lag is polled)."""
    mark = folded // step * step
    if mark > 0 and mark not in marks:
        marks[mark] = round(rss_mib, 1)


def verdict(value: float, limit: float) -> str:
    return "met" if value < limit else "NOT met"


def format_table(stages: Sequence[Stage]) -> str:
    """The stages as a Markdown table: wall, CPU, CPU share of wall, peak RSS, load."""
    lines = [
        "| stage | wall s | CPU s | CPU/wall | peak RSS MiB | load 1m before/after | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for stage in stages:
        share = stage.cpu_s / stage.wall_s if stage.wall_s else 0.0
        notes = "; ".join(f"{k} {_short(v)}" for k, v in stage.extra.items() if _scalar(v))
        lines.append(
            f"| {stage.name} | {stage.wall_s:.1f} | {stage.cpu_s:.1f} | {share:.2f} | "
            f"{stage.peak_rss_bytes / 2**20:,.0f} | {stage.load_before[0]:.1f}/"
            f"{stage.load_after[0]:.1f} | {notes} |"
        )
    return "\n".join(lines)


def _scalar(value: Any) -> bool:
    return isinstance(value, int | float | str)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


# -- running the stages ----------------------------------------------------------------------


@contextlib.contextmanager
def measured(name: str) -> Iterator[tuple[Stage, list[TreeSampler]]]:
    """Time a stage; the caller starts a TreeSampler on its process and hands it over."""
    stage = Stage(name, load_before=os.getloadavg())
    samplers: list[TreeSampler] = []
    started = time.perf_counter()
    try:
        yield stage, samplers
    finally:
        stage.wall_s = time.perf_counter() - started
        for sampler in samplers:
            sampler.stop()
        stage.cpu_s = sum(s.usage.cpu_seconds for s in samplers)
        stage.peak_rss_bytes = max((s.usage.peak_tree_rss for s in samplers), default=0)
        stage.load_after = os.getloadavg()
        print(
            f"{name}: {stage.wall_s:.1f} s wall, {stage.cpu_s:.1f} CPU-s, "
            f"peak {stage.peak_rss_bytes / 2**20:,.0f} MiB, load {stage.load_after[0]:.1f}",
            flush=True,
        )


def run_to_end(
    settings: Settings, stage: Stage, samplers: list[TreeSampler], log: Path, *args: str
) -> str:
    """Run `streamrec ARGS` to completion, sampled; its output (also in ``log``)."""
    with streamrec_process(settings, *args, log=log) as proc:
        sampler = TreeSampler(proc.pid)
        samplers.append(sampler.__enter__())
        while proc.poll() is None:
            time.sleep(0.2)
        sampler.stop()
    output = log.read_text(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"streamrec {' '.join(args)} exited {proc.returncode}:\n{output[-3000:]}")
    return output


def wait_caught_up(
    settings: Settings,
    group: str,
    topics: Topics,
    proc: subprocess.Popen[bytes],
    progress: Callable[[int], None] | None = None,
) -> float | None:
    """Block until ``group`` committed every event; seconds from its first commit.
    ``progress`` is called with the interactions committed so far at each poll."""
    first_commit = None
    while True:
        rows = [r for r in consumer_lag(settings.bootstrap_servers) if r.group == group]
        folded = sum(max(r.committed, 0) for r in rows if r.topic == topics.interactions)
        if progress is not None:
            progress(folded)
        if first_commit is None and folded > 0:
            first_commit = time.perf_counter()
        activity = [r for r in rows if r.topic.endswith("worker-item-activity")]
        total = sum(r.end for r in rows if r.topic == topics.interactions)
        if rows and activity and all(r.lag == 0 for r in rows) and folded == total:
            return None if first_commit is None else time.perf_counter() - first_commit
        if proc.poll() is not None:
            raise SystemExit(f"worker exited with {proc.returncode}")
        time.sleep(0.5)


def training_breakdown(settings: Settings, report: dict[str, Any], output: str) -> dict[str, Any]:
    """Per stage, Ray's share and the pipeline's own steps, from the report and MLflow."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=settings.mlflow_uri)
    seed_run = report["mlflow"]["seed_run_ids"][0]
    keys = [k for k in client.get_run(seed_run).data.metrics if k.endswith(".loss")]
    epochs = {
        key.removesuffix(".loss"): [m.timestamp for m in client.get_metric_history(seed_run, key)]
        for key in keys
    }
    worker_s = report["training_history"]["0"]["seconds"][0]["train"]
    ray_s = report["timings"]["train (Ray Train)"]
    logged = ray_log_seconds(output)
    return {
        "steps": report["timings"],
        "stages_in_worker": stage_seconds(epochs, worker_s),
        "epochs": {stage: len(stamps) for stage, stamps in epochs.items()},
        "worker_train_s": worker_s,
        "ray_overhead_s": ray_s - worker_s,
        "ray_start_s": logged.get("ray start"),
        "interactions": report["source"]["interactions"],
        "gate": report["gate"]["reason"],
        "promoted": report["gate"]["promoted"],
        "set_id": report["set_id"],
        "versions": report["gate"]["versions"],
    }


def make_champion(settings: Settings, versions: dict[str, str]) -> None:
    """Point ``champion`` at the trained set (the gate refused it; this is a benchmark)."""
    from mlflow import MlflowClient

    from streamrec.infra.model_store import CHAMPION, REGISTERED_NAMES

    client = MlflowClient(tracking_uri=settings.mlflow_uri, registry_uri=settings.mlflow_uri)
    for stage, version in versions.items():
        client.set_registered_model_alias(REGISTERED_NAMES[stage], CHAMPION, version)


def wait_for_set(url: str, set_id: str, timeout: float = 600) -> None:
    """Until the API serves ``set_id`` (its model-info gauge says 1)."""
    deadline = time.monotonic() + timeout
    pattern = re.compile(rf'streamrec_api_model_info{{[^}}]*model_set="{set_id}"[^}}]*}} 1\.0')
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if pattern.search(httpx.get(f"{url}/metrics", timeout=10).text):
                return
        time.sleep(1)
    raise SystemExit(f"the API did not load model set {set_id} in {timeout:.0f} s")


class FreshUsers:
    """The log's users in a seeded order, handed out once each (then again from the start):
    every list of the serve stage is one the API computes, never one it kept (the answer
    memo holds a list while the user's row is unchanged; 5,000 targets drawn again at
    each rate had made the later rates mostly kept lists)."""

    def __init__(self, users: Sequence[str], seed: int = 7) -> None:
        self._order = list(users)
        random.Random(seed).shuffle(self._order)
        self._next = 0

    def take(self, n: int) -> list[str]:
        taken = []
        for _ in range(n):
            taken.append(self._order[self._next])
            self._next = (self._next + 1) % len(self._order)
        return taken


def recommend_targets(url: str, users: Sequence[str], path: Path) -> Path:
    path.write_text("".join(f"GET {url}/recommend?user_id={user}&k=10\n" for user in users))
    return path


def wait_for_every_process(url: str, rounds: int = 20, timeout: float = 600) -> None:
    """Until ``rounds`` answers of /readyz in a row name the same served set: with several
    API processes each loads the set itself, and any one of them answers a request."""
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
            detail = httpx.get(f"{url}/readyz", timeout=10).json()["checks"]["models"]["detail"]
            seen = [*seen, detail] if seen and seen[-1] == detail else [detail]
            if len(seen) >= rounds:
                return
        time.sleep(0.2)
    raise SystemExit(f"the API processes did not agree on one served set in {timeout:.0f} s")


def run(args: argparse.Namespace, base: Settings, scratch: Path, stages: list[Stage]) -> None:
    """Run and measure every stage, appending each to ``stages`` as it ends."""
    prefix = f"scale{uuid.uuid4().hex[:8]}."
    settings = base.model_copy(
        update={
            "topic_prefix": prefix,
            "data_dir": scratch / "data",
            "state_dir": scratch / "state",
            "api_port": free_port(),
            "worker_port": free_port(),
            "archiver_metrics_port": free_port(),
        }
    )
    topics = Topics(prefix)
    logs = scratch / "logs"
    spec = f"synthetic:users={args.users},items={args.items},events={args.events},{args.shape}"
    ensure_topics(settings.bootstrap_servers, topics, settings.topic_partitions)
    stack = contextlib.ExitStack()
    try:
        run_streamrec(settings, "features", "apply")
        with measured("prepare") as (stage, samplers):
            run_to_end(settings, stage, samplers, logs / "prepare.log", "data", "prepare", spec)
            stage.extra["spec"] = spec
        stages.append(stage)
        with measured("replay --speed max") as (stage, samplers):
            run_to_end(
                settings,
                stage,
                samplers,
                logs / "replay.log",
                "replay",
                "synthetic",
                "--speed",
                "max",
            )
        stage.extra["events/s"] = args.events / stage.wall_s
        stages.append(stage)
        if stops_after("replay", args.until):
            return

        running = contextlib.ExitStack()
        stack.enter_context(running)
        worker_stage = Stage("worker (to lag 0)", load_before=os.getloadavg())
        worker_started = time.perf_counter()
        worker = running.enter_context(
            streamrec_process(settings, "worker", log=logs / "worker.log")
        )
        worker_sampler = running.enter_context(TreeSampler(worker.pid))
        errors: list[BaseException] = []
        rss_by_events: dict[int, float] = {}  # interactions committed -> worker RSS MiB

        def note_memory(folded: int) -> None:
            with contextlib.suppress(psutil.Error):
                rss = psutil.Process(worker.pid).memory_info().rss / 2**20
                memory_mark(folded, max(args.events // 10, 1), rss_by_events, rss)

        def watch_worker() -> None:
            """Until the worker's group has no lag: the stage's figures at that moment."""
            try:
                from_commit = wait_caught_up(
                    settings, f"{prefix}worker", topics, worker, note_memory
                )
                worker_stage.wall_s = time.perf_counter() - worker_started
                worker_stage.extra["worker peak RSS MiB"] = peak_rss(worker.pid) / 2**20
                worker_sampler.stop()
                worker_stage.load_after = os.getloadavg()
                worker_stage.cpu_s = worker_sampler.usage.cpu_seconds
                worker_stage.peak_rss_bytes = worker_sampler.usage.peak_tree_rss
                worker_stage.extra["from first commit s"] = from_commit or 0.0
                worker_stage.extra["events/s"] = args.events / worker_stage.wall_s
                worker_stage.extra["events per CPU-s"] = args.events / worker_stage.cpu_s
                worker_stage.extra["RSS MiB by events committed"] = rss_by_events
                if args.overlap:
                    worker_stage.extra["overlapped"] = "with archive and train"
            except BaseException as exc:  # handed to the main thread
                errors.append(exc)

        watcher = threading.Thread(target=watch_worker, name="worker-lag", daemon=True)
        watcher.start()

        def worker_done() -> None:
            watcher.join()
            if errors:
                raise errors[0]
            stages.append(worker_stage)
            print(f"worker: {worker_stage.extra}", flush=True)

        if not args.overlap or stops_after("worker", args.until):
            worker_done()
        if stops_after("worker", args.until):
            return

        with measured("archive --once") as (stage, samplers):
            run_to_end(settings, stage, samplers, logs / "archive.log", "archive", "--once")
        stages.append(stage)
        if stops_after("archive", args.until):
            return

        reports = scratch / "reports"
        with measured("train") as (stage, samplers):
            stages.append(stage)  # in the table also when the training fails or is stopped
            output = run_to_end(
                settings,
                stage,
                samplers,
                logs / "train.log",
                "train",
                "--report-dir",
                str(reports),
                *args.train_args,
            )
        report = json.loads((reports / "eval.json").read_text())
        breakdown = training_breakdown(settings, report, output)
        stage.extra.update(
            {
                "options": " ".join(args.train_args) or "defaults",
                "Ray overhead s": breakdown["ray_overhead_s"],
                "Ray start s": breakdown["ray_start_s"] or 0.0,
                "in-worker train s": breakdown["worker_train_s"],
                "breakdown": breakdown,
            }
        )
        print(json.dumps(breakdown, indent=2), flush=True)

        if args.overlap:
            worker_done()
        if stops_after("train", args.until):
            return
        if not breakdown["promoted"]:
            print(f"the gate refused the set ({breakdown['gate']}); champion moved to it")
            make_champion(settings, breakdown["versions"])
        url = f"http://127.0.0.1:{settings.api_port}"
        users = FreshUsers(
            sorted(
                set(
                    pq.read_table(
                        dataset_events(settings.data_dir, "synthetic"), columns=["user_id"]
                    )
                    .column("user_id")
                    .to_pylist()
                )
            )
        )
        workers = ("--workers", str(args.api_workers))
        with streamrec_process(settings, "serve", *workers, log=logs / "api.log") as api:
            with measured("serve: start, load the set") as (stage, samplers):
                sampler = TreeSampler(api.pid)
                samplers.append(sampler.__enter__())
                _wait_ready(url, timeout=600)
                wait_for_set(url, breakdown["set_id"])
                wait_for_every_process(url)
                sampler.stop()
            stage.extra["API processes"] = args.api_workers
            stages.append(stage)
            warm_up = 500 * args.api_workers
            with measured(f"serve: warm-up {warm_up} requests") as (stage, samplers):
                sampler = TreeSampler(api.pid)
                samplers.append(sampler.__enter__())
                sampler.usage.mark_start()  # the process's CPU from here, not from its start
                with httpx.Client(timeout=30) as client:
                    for user in users.take(warm_up):
                        client.get(f"{url}/recommend", params={"user_id": user, "k": 10})
                sampler.stop()
                stage.extra["RSS after warm-up MiB"] = sampler.usage.peak_tree_rss / 2**20
            stages.append(stage)
            for rate in args.rates:
                with measured(f"serve: vegeta {rate}/s, {args.seconds:.0f} s") as (stage, samplers):
                    sampler = TreeSampler(api.pid)
                    samplers.append(sampler.__enter__())
                    sampler.usage.mark_start()
                    requests = users.take(int(rate * args.seconds) + rate)
                    targets = recommend_targets(url, requests, scratch / f"targets-{rate}.txt")
                    result = attack(targets, rate, args.seconds, scratch)
                    sampler.stop()
                    stage.extra.update(
                        {
                            "achieved/s": result.throughput,
                            "p50 ms": result.p50_ms,
                            "p95 ms": result.p95_ms,
                            "p99 ms": result.p99_ms,
                            "errors": f"{result.errors}/{result.requests}",
                        }
                    )
                stages.append(stage)
            stages[-1].extra["API peak RSS MiB"] = peak_process_rss(api.pid) / 2**20
    finally:
        stack.close()  # the worker
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
        names = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)]
        delete_topics(settings.bootstrap_servers, names)


def targets(stages: Sequence[Stage]) -> dict[str, dict[str, Any]]:
    """Issue 20 §3's targets against what was measured; those whose stage ran."""
    by_name = {s.name: s for s in stages}
    found: dict[str, dict[str, Any]] = {}
    if "prepare" in by_name and "replay --speed max" in by_name:
        seconds = by_name["prepare"].wall_s + by_name["replay --speed max"].wall_s
        found["prepare + replay < 60 s"] = {"s": seconds, "verdict": verdict(seconds, 60.0)}
    if "train" in by_name:
        seconds = by_name["train"].wall_s
        found["train < 20 min"] = {"s": seconds, "verdict": verdict(seconds, TRAIN_TARGET_S)}
    for label, key in (("worker", "worker peak RSS MiB"), ("API", "API peak RSS MiB")):
        peaks = [s.extra[key] for s in stages if key in s.extra]
        if peaks:
            found[f"{label} < 2 GiB resident"] = {
                "MiB": max(peaks),
                "verdict": verdict(max(peaks) * 2**20, MEMORY_TARGET),
            }
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=float, default=1e6, help="events in the log")
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument(
        "--shape", default=SYNTHETIC_SHAPE, help="the other synthetic: keys (sessions, ...)"
    )
    parser.add_argument(
        "--train-args",
        default="",
        help='options passed to `streamrec train`, one string (e.g. "--no-bpr")',
    )
    parser.add_argument("--rates", type=int, nargs="+", default=[100, 200])
    parser.add_argument("--seconds", type=float, default=10.0, help="per vegeta rate")
    parser.add_argument(
        "--api-workers", type=int, default=1, help="API processes (`streamrec serve --workers`)"
    )
    parser.add_argument("--out", type=Path, default=Path("reports/pipeline_scale.json"))
    parser.add_argument(
        "--overlap",
        action="store_true",
        help="archive and train while the worker still folds (as in production; the "
        "stages then share the CPUs, their CPU seconds stay their own)",
    )
    parser.add_argument(
        "--until",
        choices=STAGES[1:],
        default=STAGES[-1],
        help="the last stage to run (worker: the worker's memory and throughput alone)",
    )
    parser.add_argument("--keep", type=Path, help="keep the scratch data here (logs, archive)")
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C: the children stopped, the topics deleted.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args.events = int(args.events)
    args.train_args = shlex.split(args.train_args)
    base = load_settings()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pipeline-scale-") as scratch_dir:
        scratch = args.keep or Path(scratch_dir)
        stages: list[Stage] = []
        failure = None
        try:
            run(args, base, scratch, stages)
        except (SystemExit, Exception) as exc:  # report what was measured before it
            failure = f"{type(exc).__name__}: {exc}"
            print(f"pipeline_scale: a stage failed: {failure}", file=sys.stderr)
    total = time.perf_counter() - started
    print(format_table(stages))
    checked = targets(stages)
    for name, result in checked.items():
        unit = "s" if "s" in result else "MiB"
        print(f"target {name}: {result[unit]:,.1f} {unit} -> {result['verdict']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "command": " ".join(sys.argv),
                "events": args.events,
                "total_wall_s": total,
                "cpus": os.cpu_count(),
                "stages": [asdict(s) for s in stages],
                "targets": checked,
                "failure": failure,
            },
            indent=2,
            default=str,
        )
    )
    print(f"written {args.out}; whole run {total:.0f} s")
    return 0 if failure is None else 1


if __name__ == "__main__":
    sys.exit(main())
