"""The staging load test: Locust's scenarios, then an open-loop constant-rate run.

    .venv/bin/python bench/load_test.py [--url http://127.0.0.1:8000] [--rates 50 200 400]
        [--seconds 30] [--locust-seconds 30] [--locust-users 20] [--out reports/load]

Against a running API with MovieLens-100K replayed (`make demo`, or `scripts/demo.sh` with
your ports). Locust runs each scenario of ``bench/locustfile.py`` headless and writes its
CSV statistics. Locust is closed-loop (a slow answer delays the next request and hides the
tail), so the latency figures come from vegeta at a fixed arrival rate: each rate runs for
``--seconds`` and reports p50/p95/p99 and the share of errors. Vegeta is a Go tool:
`make install-vegeta`. The dashboard (deploy/grafana) shows the run live.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

from streamrec.paths import REPO_ROOT
from streamrec.settings import load_settings

SCENARIOS = ("BrowsingUser", "HighLoadUser", "SwitchingUser", "ErraticTimeUser")


def _vegeta() -> str:
    found = shutil.which("vegeta") or str(Path.home() / "go" / "bin" / "vegeta")
    if not Path(found).exists():
        raise SystemExit("vegeta is missing: `make install-vegeta` (needs Go)")
    return found


def run_locust(url: str, scenario: str, users: int, seconds: int, out: Path) -> None:
    locust = Path(sys.executable).with_name("locust")
    command = [
        str(locust),
        "-f",
        str(REPO_ROOT / "bench" / "locustfile.py"),
        "--headless",
        "--host",
        url,
        "-u",
        str(users),
        "-r",
        str(max(1, users // 5)),
        "-t",
        f"{seconds}s",
        "--csv",
        str(out / scenario),
        "--only-summary",
        scenario,
    ]
    subprocess.run(command, check=False, capture_output=True)


def locust_row(out: Path, scenario: str) -> str:
    """The Aggregated line of a scenario's CSV stats."""
    import csv

    with (out / f"{scenario}_stats.csv").open() as handle:
        rows = [r for r in csv.DictReader(handle) if r["Name"] == "Aggregated"]
    r = rows[0]
    return (
        f"| {scenario} | {float(r['Requests/s']):.0f} | {r['50%']} | {r['95%']} | "
        f"{r['99%']} | {r['Failure Count']}/{r['Request Count']} |"
    )


def targets_file(url: str, out: Path, users: int = 943, n: int = 5000) -> Path:
    """GET /recommend for returning users in random order; vegeta cycles through them."""
    path = out / "targets.txt"
    rng = random.Random(7)
    path.write_text(
        "".join(f"GET {url}/recommend?user_id={rng.randint(1, users)}&k=10\n" for _ in range(n))
    )
    return path


def run_vegeta(vegeta: str, targets: Path, rate: int, seconds: int, out: Path) -> dict:
    results = out / f"vegeta_{rate}.bin"
    with results.open("wb") as sink:
        subprocess.run(
            [
                vegeta,
                "attack",
                f"-targets={targets}",
                f"-rate={rate}/s",
                f"-duration={seconds}s",
                "-timeout=10s",
                "-max-workers=2000",
            ],
            stdout=sink,
            check=True,
        )
    report = subprocess.run(
        [vegeta, "report", "-type=json", str(results)], capture_output=True, check=True, text=True
    )
    return dict(json.loads(report.stdout))


def vegeta_row(rate: int, report: dict) -> str:
    ms = {q: report["latencies"][q] / 1e6 for q in ("50th", "95th", "99th", "max")}
    errors = report["requests"] - round(report["success"] * report["requests"])
    return (
        f"| {rate} | {report['throughput']:.1f} | {ms['50th']:.1f} | {ms['95th']:.1f} | "
        f"{ms['99th']:.1f} | {ms['max']:.0f} | {errors}/{report['requests']} "
        f"{dict(report['status_codes'])} |"
    )


def main() -> None:
    settings = load_settings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=f"http://127.0.0.1:{settings.api_port}")
    parser.add_argument("--rates", type=int, nargs="+", default=[50, 200, 400])
    parser.add_argument("--seconds", type=int, default=30, help="per constant rate")
    parser.add_argument("--locust-seconds", type=int, default=30, help="per scenario")
    parser.add_argument("--locust-users", type=int, default=20)
    parser.add_argument("--scenarios", nargs="*", default=list(SCENARIOS))
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports" / "load")
    args = parser.parse_args()
    vegeta = _vegeta()
    args.out.mkdir(parents=True, exist_ok=True)
    lines = ["## Locust (closed loop)", ""]
    lines += [
        "| scenario | req/s | p50 ms | p95 ms | p99 ms | failures |",
        "|---|---|---|---|---|---|",
    ]
    for scenario in args.scenarios:
        run_locust(args.url, scenario, args.locust_users, args.locust_seconds, args.out)
        lines.append(locust_row(args.out, scenario))
        print(lines[-1], flush=True)
    lines += ["", "## vegeta, GET /recommend at a constant arrival rate (open loop)", ""]
    lines += [
        "| rate/s | achieved/s | p50 ms | p95 ms | p99 ms | max ms | errors (status codes) |",
        "|---|---|---|---|---|---|---|",
    ]
    targets = targets_file(args.url, args.out)
    for rate in args.rates:
        lines.append(vegeta_row(rate, run_vegeta(vegeta, targets, rate, args.seconds, args.out)))
        print(lines[-1], flush=True)
    (args.out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
