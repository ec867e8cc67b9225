"""The worker's impression-click join under served lists: CPU per list and memory per
request held, this build against an earlier one, in one run.

    .venv/bin/python bench/join_table.py [--lists 200000] [--rate 400] [--before REV]

No services: it folds ``--lists`` RecommendationServed events of ten items (served
``--rate`` per second of event time, over 3 partitions, in batches of ``--batch``)
through ``streams.joins.FaustJoin`` over an in-memory table (a dict, as Faust's memory
store is), with ``--click-share`` of them clicked a few seconds to minutes later (none by
default: what the load test sends). It prints the CPU-ms per list over each quarter of
the lists (the table grows: no click means no clock to forget a request by), the requests
held at the end, and the growth of the process's resident memory per request held (the
events stay in memory for the run, so a build whose table shares their strings, as the
one that kept decoded JSON did, is counted smaller than it is in a worker).

``--before REV`` runs the same lists through ``streams/`` as it was at the git revision
REV (extracted with ``git archive`` into a scratch directory, run in a child process),
alternating with this build ``--repeats`` times, and prints the ratios of the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PARTITIONS = 3
QUARTERS = 4


def _rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _events(lists: int, rate: float, click_share: float, seed: int) -> list[Any]:
    """(partition, decoded event) in event-time order."""
    from streams.events import Click, RecommendationServed, RecommendedItem

    rng = random.Random(seed)
    start = 1_700_000_000_000
    timed: list[tuple[int, int, Any]] = []
    for n in range(lists):
        at = start + int(n * 1000 / rate)
        user = f"u{rng.randrange(1000)}"
        items = tuple(
            RecommendedItem(item_id=str(rng.randrange(1700)), rank=k + 1, score=1.0, reason="r")
            for k in range(10)
        )
        request = f"req-{n:08d}"
        served = RecommendationServed(
            user_id=user,
            request_id=request,
            variant="a",
            model_version="m",
            event_time=at,
            items=items,
        )
        partition = int(user[1:]) % PARTITIONS
        timed.append((at, partition, served))
        if rng.random() < click_share:
            clicked = rng.choice(items)
            click_at = at + rng.randrange(2_000, 300_000)
            click = Click(
                user_id=user,
                request_id=request,
                item_id=clicked.item_id,
                rank=clicked.rank,
                event_time=click_at,
            )
            timed.append((click_at, partition, click))
    timed.sort(key=lambda t: t[0])
    return [(partition, event) for _, partition, event in timed]


class _Stream:
    current_event: Any = None

    def _set_current_event(self, event: Any) -> None:
        self.current_event = event


def run_once(lists: int, rate: float, click_share: float, batch: int, seed: int) -> dict[str, Any]:
    """Fold the lists through this interpreter's ``streams.joins``; what it cost."""
    from prometheus_client import CollectorRegistry

    from streams.events import RecommendationServed
    from streams.joins import FaustJoin, JoinMetrics

    events = _events(lists, rate, click_share, seed)
    offsets = {("recs", p): 0 for p in range(PARTITIONS)} | {
        ("clicks", p): 0 for p in range(PARTITIONS)
    }
    positioned = []
    for partition, event in events:
        topic = "recs" if isinstance(event, RecommendationServed) else "clicks"
        offset = offsets[(topic, partition)]
        offsets[(topic, partition)] = offset + 1
        message = SimpleNamespace(topic=f"b.{topic}", partition=partition, offset=offset)
        positioned.append((SimpleNamespace(message=message), event))
    table: dict[str, Any] = {}
    join = FaustJoin(table, JoinMetrics.create(CollectorRegistry()))  # type: ignore[arg-type]
    stream = _Stream()
    rss_before = _rss_bytes()
    batches = [positioned[start : start + batch] for start in range(0, len(positioned), batch)]
    cpu_ms: list[float] = []
    lists_in: list[int] = []
    for quarter in range(QUARTERS):
        part = batches[
            quarter * len(batches) // QUARTERS : (quarter + 1) * len(batches) // QUARTERS
        ]
        started = time.process_time()
        for chunk in part:
            join.fold_batch(stream, chunk)  # type: ignore[arg-type]
        cpu_ms.append(1000 * (time.process_time() - started))
        lists_in.append(sum(isinstance(e, RecommendationServed) for c in part for _, e in c))
    return {
        "cpu_ms_per_list": [ms / max(n, 1) for ms, n in zip(cpu_ms, lists_in, strict=True)],
        "cpu_ms_mean": sum(cpu_ms) / max(sum(lists_in), 1),
        "held": len(table),
        "rss_per_held": (_rss_bytes() - rss_before) / max(len(table), 1),
    }


def _child(rev_dir: Path | None, args: argparse.Namespace) -> dict[str, Any]:
    """One run in a child process (this build, or ``streams/`` of ``rev_dir``)."""
    env = dict(os.environ)
    path = [str(rev_dir)] if rev_dir is not None else []
    env["PYTHONPATH"] = os.pathsep.join([*path, str(ROOT), env.get("PYTHONPATH", "")])
    command = [sys.executable, str(Path(__file__).resolve()), "--child"]
    for name in ("lists", "rate", "click_share", "batch", "seed"):
        command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def _extract(rev: str, into: Path) -> None:
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "streams"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)


def _report(name: str, runs: list[dict[str, Any]]) -> dict[str, float]:
    per_quarter = [[run["cpu_ms_per_list"][q] for run in runs] for q in range(QUARTERS)]
    medians = [statistics.median(values) for values in per_quarter]
    held = statistics.median(run["held"] for run in runs)
    rss = statistics.median(run["rss_per_held"] for run in runs)
    mean = statistics.median(run["cpu_ms_mean"] for run in runs)
    quarters = ", ".join(f"{m:.3f}" for m in medians)
    print(
        f"{name}: CPU-ms per list {mean:.3f} over the run, by quarter {quarters} "
        f"(medians of {len(runs)}); {held:,.0f} requests held, {rss:,.0f} resident bytes each"
    )
    return {"mean": mean, "last_quarter": medians[-1], "rss": rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lists", type=int, default=200_000)
    parser.add_argument("--rate", type=float, default=400.0, help="lists per event-time second")
    parser.add_argument("--click-share", type=float, default=0.0)
    parser.add_argument("--batch", type=int, default=100, help="events per worker batch")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--before", help="a git revision to compare with")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = run_once(args.lists, args.rate, args.click_share, args.batch, args.seed)
        print(json.dumps(result))
        return
    print(
        f"{args.lists:,} lists of 10 at {args.rate:g}/s of event time, "
        f"{args.click_share:.0%} clicked, batches of {args.batch}"
    )
    with tempfile.TemporaryDirectory() as scratch:
        before_dir = None
        if args.before:
            before_dir = Path(scratch)
            _extract(args.before, before_dir)
        after_runs, before_runs = [], []
        for _ in range(args.repeats):
            after_runs.append(_child(None, args))
            if before_dir is not None:
                before_runs.append(_child(before_dir, args))
    after = _report("this build", after_runs)
    if before_runs:
        before = _report(f"at {args.before}", before_runs)
        print(
            f"ratio before/after: CPU per list {before['mean'] / after['mean']:.1f}x over the "
            f"run, {before['last_quarter'] / after['last_quarter']:.1f}x in the last quarter, "
            f"memory per request held {before['rss'] / after['rss']:.1f}x"
        )


if __name__ == "__main__":
    main()
