"""The load test: open-loop constant-rate runs against a running API, with a bare FastAPI
app (and optionally another build of the API) measured in the same run for the ratio.

    .venv/bin/python bench/load_test.py [--url http://127.0.0.1:8000] [--rates 50 200 400 800]
        [--seconds 20] [--targets recommend events] [--compare-url URL] [--no-bare]
        [--api-workers 1 2] [--ingest-keys K1,K2,...] [--locust-seconds 0] [--out reports/load]

``make loadtest`` runs it against the API of the settings (``make demo``'s). For each rate,
each system is attacked in turn (ours, the comparison, the bare app), so all see the same
machine load, and the order rotates from one rate to the next (at a rate past what the
stack holds, the system attacked second meets the backlog the first left: the worker's
served events, the broker's queue); the table has p50/p95/p99, the achieved rate and the
errors, and per system the highest rate held with p99 <= 50 ms and no errors, as a share
of the bare app's.
Vegeta (``make install-vegeta``, part of ``make install``) is the open-loop generator
(``bench/open_loop.py``). POST /events counts against the per-client rate limit: pass the
API's ingest keys so that the load spreads over several clients. Locust's closed-loop
scenarios (``bench/locustfile.py``) run first when ``--locust-seconds`` is above 0.

``--background-rate 1000`` replays ``--source``'s log again meanwhile at the speed that
averages that many events/s (``bench/background.py``), so the worker folds events, the
item features change and users' rows move while the API is measured. After each of our
systems' rows, the share of lists the API answered from its memo (``kept``: the user's
row, the served set and the titles unchanged since computed, ``api/serving/memo.py``).

After every row, the CPU milliseconds per request of each process of the stack over that
run (``bench/stack_cpu.py``: the API, the worker, the broker, Redis, Prometheus, found by
their ports; the demo's Spark job and archiver, by their pid files; the load generator; the
rest of the machine) and the machine's busy share:
on two cores, whether a rate can be held is whether all of them fit.

``--streams N`` holds N SSE streams (``/recommend/stream``, random users) open on the
first system meanwhile.

``--api-workers 1 2`` compares API processes per host: instead of ``--url``, it starts
``streamrec serve --workers N`` for each N on a port of its own, over the services and
state of the settings, and attacks each in turn at every rate (all of them stay up, so
they see the same machine); their logs are written beside the reports.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.background import background_replay, open_streams, speed_for_rate
from bench.open_loop import (
    TABLE_HEADER,
    Report,
    attack,
    events_targets,
    recommend_targets,
    table_row,
)
from bench.stack_cpu import measure_cpu, stack_pid_files, stack_ports
from streamrec.infra.processes import free_port, streamrec_process
from streamrec.paths import REPO_ROOT
from streamrec.settings import Settings, load_settings

SCENARIOS = ("BrowsingUser", "HighLoadUser", "SwitchingUser", "ErraticTimeUser")
P99_OBJECTIVE_MS = 50.0


@contextmanager
def bare_app() -> Iterator[str]:
    """``bench/bare_api.py`` on a free port, for as long as the context is open."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "bench.bare_api", str(port)], cwd=REPO_ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, "/healthz")
        yield url
    finally:
        process.terminate()
        process.wait(10)


@contextmanager
def served_apis(settings: Settings, workers: list[int], out: Path) -> Iterator[dict[str, str]]:
    """``streamrec serve --workers N`` for each N, each on a free port, until the context
    closes (SIGTERM to each, as an operator stops it); their names and URLs."""
    with ExitStack() as stack:
        urls: dict[str, str] = {}
        for count in workers:
            port = free_port()
            name = f"{count} process" + ("es" if count > 1 else "")
            stack.enter_context(
                streamrec_process(
                    settings.model_copy(update={"api_port": port}),
                    "serve",
                    "--workers",
                    str(count),
                    log=out / f"api-workers-{count}.log",
                )
            )
            urls[name] = f"http://127.0.0.1:{port}"
        for url in urls.values():
            # Several processes importing the model stack at once start slowly.
            wait_ready(url, timeout=600)
        yield urls


def wait_ready(url: str, path: str = "/readyz", timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + path, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(
        f"{url}{path} did not answer 200 within {timeout:.0f}s: start the API first "
        "(`make demo`, or `streamrec serve` on a replayed log) or pass --url"
    )


def run_locust(url: str, scenario: str, users: int, seconds: int, out: Path) -> None:
    locust = Path(sys.executable).with_name("locust")
    command = [
        str(locust), "-f", str(REPO_ROOT / "bench" / "locustfile.py"), "--headless",
        "--host", url, "-u", str(users), "-r", str(max(1, users // 5)), "-t", f"{seconds}s",
        "--csv", str(out / scenario), "--only-summary", scenario,
    ]  # fmt: skip
    subprocess.run(command, check=False, capture_output=True)


def capacity(reports: list[Report]) -> int:
    """The highest offered rate held (no errors, rate achieved, p99 within the objective)
    below the first rate that was not."""
    held = 0
    for report in sorted(reports, key=lambda r: r.rate):
        if not report.meets(P99_OBJECTIVE_MS):
            break
        held = report.rate
    return held


def main() -> int:
    settings = load_settings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=f"http://127.0.0.1:{settings.api_port}")
    parser.add_argument("--compare-url", default=None, help="another API build, same load")
    parser.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="one more running API under the same load (repeatable)",
    )
    parser.add_argument("--no-bare", action="store_true", help="skip the bare FastAPI app")
    parser.add_argument(
        "--api-workers",
        type=int,
        nargs="+",
        default=None,
        help="start `streamrec serve --workers N` for each N and compare them (not --url)",
    )
    parser.add_argument("--rates", type=int, nargs="+", default=[50, 200, 400, 800])
    parser.add_argument("--seconds", type=float, default=20, help="per rate and system")
    parser.add_argument(
        "--targets", nargs="+", default=["recommend"], choices=["recommend", "events"]
    )
    parser.add_argument("--users", type=int, default=943, help="user ids 1..N (MovieLens-100K)")
    parser.add_argument("--items", type=int, default=1682, help="item ids 1..N")
    parser.add_argument(
        "--ingest-keys",
        default=settings.ingest_keys.get_secret_value() if settings.ingest_keys else "",
    )
    parser.add_argument(
        "--background-rate",
        type=float,
        default=0.0,
        help="replay --source again meanwhile, averaging this many events/s (0: none)",
    )
    parser.add_argument("--source", default="movielens-100k", help="the log replayed")
    parser.add_argument(
        "--streams", type=int, default=0, help="SSE streams held open on --url meanwhile"
    )
    parser.add_argument("--locust-seconds", type=int, default=0, help="per Locust scenario")
    parser.add_argument("--locust-users", type=int, default=20)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports" / "load")
    args = parser.parse_args()
    args.settings = settings
    for also in args.also:
        if not also.partition("=")[2].startswith("http"):
            parser.error(f"--also takes NAME=URL (e.g. two=http://127.0.0.1:8002): {also!r}")
    args.out.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        if args.api_workers:
            systems = stack.enter_context(served_apis(settings, args.api_workers, args.out))
        else:
            wait_ready(args.url)
            systems = {"streamrec": args.url}
        speed = (
            speed_for_rate(settings.data_dir, args.source, args.background_rate)
            if args.background_rate > 0
            else 0.0
        )
        if speed:
            print(f"background replay: {args.background_rate:,.0f} events/s on average", flush=True)
        stack.enter_context(background_replay(settings, args.source, speed=speed))
        first = next(iter(systems.values()))
        streams = stack.enter_context(open_streams(first, args.users, args.streams))
        status = run(args, systems)
        if streams:
            updates = sum(stream.events.qsize() for stream in streams)
            print(f"{len(streams)} SSE streams on {first} got {updates} events meanwhile")
        return status


def run(args: argparse.Namespace, systems: dict[str, str]) -> int:
    if args.compare_url:
        wait_ready(args.compare_url)
        systems["compare"] = args.compare_url
    for also in args.also:
        name, _, url = also.partition("=")
        wait_ready(url)
        systems[name] = url
    lines: list[str] = []
    for scenario in SCENARIOS if args.locust_seconds > 0 else ():
        run_locust(args.url, scenario, args.locust_users, args.locust_seconds, args.out)
        lines.append(f"locust {scenario}: see {args.out / scenario}_stats.csv")
    keys = [k.strip() for k in args.ingest_keys.split(",") if k.strip()]
    with bare_app() if not args.no_bare else _nothing() as bare_url:
        if bare_url:
            systems["bare FastAPI"] = bare_url
        results: dict[tuple[str, str], list[Report]] = {}
        lines += [TABLE_HEADER]
        print(TABLE_HEADER, flush=True)
        for target in args.targets:
            for turn, rate in enumerate(args.rates):
                for name, url in in_turn(systems, turn):
                    before = memo_counts(url) if name != "bare FastAPI" else None
                    path = args.out / f"{target}_{name.replace(' ', '_')}.targets"
                    if target == "recommend":
                        targets = recommend_targets(url, path, args.users)
                    else:
                        targets = events_targets(url, path, args.users, args.items, keys)
                    with measure_cpu(
                        stack_ports(args.settings, url), stack_pid_files(args.settings)
                    ) as cpu:
                        report = attack(
                            targets, rate, args.seconds, args.out, json_targets=target == "events"
                        )
                    results.setdefault((target, name), []).append(report)
                    lines.append(table_row(f"{name} {target}", report))
                    lines.append(cpu.per_request_line(report.requests))
                    print("\n".join(lines[-2:]), flush=True)
                    if before is not None and target == "recommend":
                        lines.append(memo_line(before, memo_counts(url)))
                        print(lines[-1], flush=True)
        lines.append("")
        for target in args.targets:
            floor = capacity(results.get((target, "bare FastAPI"), []))
            for name in systems:
                held = capacity(results[(target, name)])
                share = f", {held / floor:.0%} of the bare app's" if floor and bare_url else ""
                lines.append(
                    f"{name} {target}: held {held}/s with p99 <= {P99_OBJECTIVE_MS:.0f} ms "
                    f"and no errors{share}"
                )
    summary = "\n".join(lines) + "\n"
    (args.out / "summary.md").write_text(summary)
    print(summary)
    return 0


def in_turn(systems: dict[str, str], turn: int) -> list[tuple[str, str]]:
    """The systems in the order of this turn: the list rotated by ``turn``."""
    order = list(systems.items())
    shift = turn % len(order) if order else 0
    return order[shift:] + order[:shift]


def memo_counts(url: str) -> tuple[float, float]:
    """(kept, computed) lists so far, from the API's /metrics (0, 0 when it has none)."""
    kept = computed = 0.0
    try:
        text = httpx.get(f"{url}/metrics", timeout=10).text
    except httpx.HTTPError:
        return kept, computed
    for family in text_string_to_metric_families(text):
        if family.name != "streamrec_api_answer_memo":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                if sample.labels["outcome"] == "hit":
                    kept += sample.value
                else:
                    computed += sample.value
    return kept, computed


def memo_line(before: tuple[float, float], after: tuple[float, float]) -> str:
    kept, computed = after[0] - before[0], after[1] - before[1]
    total = kept + computed
    share = f"{kept / total:.0%}" if total else "n/a"
    return f"  kept lists (memo): {share} of {total:,.0f}"


@contextmanager
def _nothing() -> Iterator[str]:
    yield ""


if __name__ == "__main__":
    sys.exit(main())
