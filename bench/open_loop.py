"""Open-loop load with vegeta: requests at a constant arrival rate, whatever the answers do.

A closed-loop client (Locust, a loop of awaits) sends the next request only after an
answer, so a slow server receives less load and the queue behind a slow answer never
shows. Vegeta sends on schedule; its report has the latency percentiles of every request
and the throughput actually achieved. ``make install-vegeta`` (part of ``make install``)
builds the pinned version with Go.
"""

from __future__ import annotations

import base64
import json
import random
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ACTIONS = ("view", "click", "rate", "cart", "purchase")


def vegeta() -> str:
    found = shutil.which("vegeta") or str(Path.home() / "go" / "bin" / "vegeta")
    if not Path(found).exists():
        raise SystemExit("vegeta is missing: `make install-vegeta` (needs Go)")
    return found


def recommend_targets(url: str, path: Path, users: int, n: int = 5000, seed: int = 7) -> Path:
    """GET /recommend for returning users (ids 1..users) in random order; vegeta cycles."""
    rng = random.Random(seed)
    path.write_text(
        "".join(f"GET {url}/recommend?user_id={rng.randint(1, users)}&k=10\n" for _ in range(n))
    )
    return path


def events_targets(
    url: str,
    path: Path,
    users: int,
    items: int,
    keys: Sequence[str] = (),
    n: int = 5000,
    seed: int = 11,
) -> Path:
    """POST /events bodies (JSON target format), each from one of ``keys`` in turn when
    ingest keys are configured; without ``event_time``, so each is stamped on receipt."""
    rng = random.Random(seed)
    lines = []
    for number in range(n):
        body: dict[str, object] = {
            "user_id": str(rng.randint(1, users)),
            "item_id": str(rng.randint(1, items)),
            "action": rng.choice(ACTIONS),
        }
        if body["action"] == "rate":
            body["rating"] = float(rng.randint(1, 5))
        header: dict[str, list[str]] = {"Content-Type": ["application/json"]}
        if keys:
            header["X-Ingest-Key"] = [keys[number % len(keys)]]
        target = {
            "method": "POST",
            "url": f"{url}/events",
            "body": base64.b64encode(json.dumps(body).encode()).decode(),
            "header": header,
        }
        lines.append(json.dumps(target))
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass(frozen=True)
class Report:
    """One constant-rate run: what was offered and what came back."""

    rate: int
    throughput: float  # successful answers per second
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    requests: int
    errors: int
    status_codes: dict[str, int]

    @classmethod
    def of(cls, rate: int, raw: dict[str, Any]) -> Report:
        latency = raw["latencies"]
        requests = int(raw["requests"])
        return cls(
            rate=rate,
            throughput=float(raw["throughput"]),
            p50_ms=latency["50th"] / 1e6,
            p95_ms=latency["95th"] / 1e6,
            p99_ms=latency["99th"] / 1e6,
            max_ms=latency["max"] / 1e6,
            requests=requests,
            errors=requests - round(float(raw["success"]) * requests),
            status_codes={str(k): int(v) for k, v in raw["status_codes"].items()},
        )

    def meets(self, p99_ms: float) -> bool:
        """No errors, the offered rate achieved (within 3 %), and p99 within bounds."""
        return self.errors == 0 and self.throughput >= 0.97 * self.rate and self.p99_ms <= p99_ms


def attack(
    targets: Path,
    rate: int,
    seconds: float,
    out: Path,
    *,
    json_targets: bool = False,
    timeout_seconds: float = 10.0,
) -> Report:
    """``rate`` requests/s for ``seconds`` (open loop); the report of every request."""
    results = out / f"vegeta_{targets.stem}_{rate}_{time.monotonic_ns()}.bin"
    command = [
        vegeta(),
        "attack",
        f"-targets={targets}",
        f"-rate={rate}/s",
        f"-duration={seconds}s",
        f"-timeout={timeout_seconds}s",
        "-max-workers=2000",
    ]
    if json_targets:
        command.append("-format=json")
    with results.open("wb") as sink:
        subprocess.run(command, stdout=sink, check=True)
    report = subprocess.run(
        [vegeta(), "report", "-type=json", str(results)], capture_output=True, check=True, text=True
    )
    results.unlink()
    return Report.of(rate, json.loads(report.stdout))


TABLE_HEADER = (
    "| target | offered/s | achieved/s | p50 ms | p95 ms | p99 ms | max ms | errors |\n"
    "|---|---|---|---|---|---|---|---|"
)


def table_row(name: str, report: Report) -> str:
    codes = ", ".join(f"{code}: {count}" for code, count in sorted(report.status_codes.items()))
    return (
        f"| {name} | {report.rate} | {report.throughput:.1f} | {report.p50_ms:.1f} | "
        f"{report.p95_ms:.1f} | {report.p99_ms:.1f} | {report.max_ms:.0f} | "
        f"{report.errors}/{report.requests} ({codes}) |"
    )
