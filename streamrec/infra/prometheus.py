"""The Prometheus server `streamrec services up` runs, and the stack it scrapes.

Debian's ``prometheus`` binary runs from the state directory like Kafka and Redis. Its
targets come from file-based service discovery (``targets/*.json`` under its folder):
``up`` writes the stack of these settings (API, worker, Spark job, archiver); a test or a
benchmark that runs its own processes on other ports adds a file of its own and removes
it afterwards, and Prometheus picks both up without a restart. Each target carries its
``job`` label, so one scrape job serves every process.

The recording and alerting rules are read from ``deploy/prometheus/`` in the repository,
the same files the container and Kubernetes deployments load.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from streamrec.infra.dashboards import RULE_FILES, RULES_DIR
from streamrec.infra.services import (
    ServiceError,
    ServiceStatus,
    _port_open,
    _Process,
    _require,
    _wait_for,
)
from streamrec.settings import Settings


class PrometheusQueryError(RuntimeError):
    """Prometheus refused a query (bad PromQL) or could not be reached."""


@dataclass(frozen=True)
class ScrapeTarget:
    """One process of the stack: its Prometheus job and where its health shows."""

    name: str  # as `services status` prints it
    job: str
    address: str  # host:port of its /metrics
    health_path: str = "/metrics"


def stack_targets(settings: Settings) -> list[ScrapeTarget]:
    """The processes of one stack, from the ports of its settings."""
    return [
        ScrapeTarget("api", "streamrec-api", f"127.0.0.1:{settings.api_port}", "/healthz"),
        ScrapeTarget(
            "worker", "streamrec-worker", f"{settings.worker_host}:{settings.worker_port}"
        ),
        ScrapeTarget("spark", "streamrec-spark", f"127.0.0.1:{settings.spark_metrics_port}"),
        ScrapeTarget(
            "archiver", "streamrec-archiver", f"127.0.0.1:{settings.archiver_metrics_port}"
        ),
        ScrapeTarget("drift", "streamrec-drift", f"127.0.0.1:{settings.drift_metrics_port}"),
        ScrapeTarget("monitor", "streamrec-monitor", f"127.0.0.1:{settings.monitor_metrics_port}"),
    ]


def probe(target: ScrapeTarget, timeout: float = 1.0) -> ServiceStatus:
    """Whether a stack process answers on its health path (it is not ours to start)."""
    url = f"http://{target.address}{target.health_path}"
    try:
        response = httpx.get(url, timeout=timeout)
    except httpx.HTTPError:
        return ServiceStatus(target.name, False, None, target.address, "not running")
    healthy = response.status_code == 200
    detail = "" if healthy else f"{target.health_path} answered {response.status_code}"
    return ServiceStatus(target.name, healthy, None, target.address, detail)


def targets_file_content(targets: list[ScrapeTarget], labels: dict[str, str]) -> str:
    """A file_sd document: one group per target, its job as a label."""
    groups = [{"targets": [t.address], "labels": {"job": t.job, **labels}} for t in targets]
    return json.dumps(groups, indent=2) + "\n"


class PrometheusServer:
    """Debian's prometheus, with its config, targets and data under the state directory."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.proc = _Process("prometheus", settings.state_dir, marker="prometheus")
        self.config_file = self.proc.dir / "prometheus.yml"
        self.targets_dir = self.proc.dir / "targets"
        self.data_dir = self.proc.dir / "data"

    @property
    def port(self) -> int:
        return self.settings.prometheus_port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> dict[str, Any]:
        interval = f"{self.settings.prometheus_scrape_seconds:g}s"
        return {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": [str(RULES_DIR / name) for name in RULE_FILES],
            "scrape_configs": [
                {
                    "job_name": "prometheus",
                    "static_configs": [{"targets": [f"127.0.0.1:{self.port}"]}],
                },
                {
                    # The job label comes with each target (see the module docstring).
                    "job_name": "streamrec",
                    "file_sd_configs": [{"files": [str(self.targets_dir / "*.json")]}],
                },
            ],
        }

    def write_config(self) -> None:
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        # JSON is YAML, so the config needs no YAML writer.
        self.config_file.write_text(json.dumps(self.config(), indent=2) + "\n")
        self.add_targets("stack", stack_targets(self.settings))

    def add_targets(
        self, name: str, targets: list[ScrapeTarget], labels: dict[str, str] | None = None
    ) -> Path:
        """Scrape ``targets`` too, until :meth:`remove_targets` (picked up within seconds)."""
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        path = self.targets_dir / f"{name}.json"
        tmp = path.with_suffix(".tmp")  # renamed into place: never a half-written file
        tmp.write_text(targets_file_content(targets, labels or {}))
        os.replace(tmp, path)
        return path

    def remove_targets(self, name: str) -> None:
        (self.targets_dir / f"{name}.json").unlink(missing_ok=True)

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def up(self) -> None:
        if self.proc.pid() is not None:  # left alone, like Kafka and Redis
            _wait_for(self.healthy, "Prometheus", 30, self.proc.log_file)
            return
        self.write_config()
        if _port_open(self.port):
            raise ServiceError(
                f"port {self.port} is taken by another process; "
                "set STREAMREC_PROMETHEUS_PORT to a free port"
            )
        binary = _require(
            "prometheus",
            "Install it with `apt-get install prometheus` (`make install` does this).",
        )
        self.proc.start(
            [
                binary,
                f"--config.file={self.config_file}",
                f"--storage.tsdb.path={self.data_dir}",
                "--storage.tsdb.retention.time=7d",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ]
        )
        _wait_for(self.healthy, "Prometheus", 60, self.proc.log_file)

    def status(self) -> ServiceStatus:
        pid = self.proc.pid()
        healthy = pid is not None and self.healthy()
        return ServiceStatus(
            "prometheus",
            healthy,
            pid,
            self.url,
            "" if healthy else ("not healthy" if pid else "stopped"),
        )

    def query(self, expr: str, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The series an instant query returns; raises on a PromQL error."""
        try:
            response = httpx.get(
                f"{self.url}/api/v1/query", params={"query": expr}, timeout=timeout
            )
        except httpx.HTTPError as exc:
            raise PrometheusQueryError(f"Prometheus at {self.url} did not answer: {exc}") from exc
        body = response.json()
        if body.get("status") != "success":
            raise PrometheusQueryError(f"{expr!r}: {body.get('errorType')}: {body.get('error')}")
        return list(body["data"]["result"])

    def active_targets(self) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/api/v1/targets", timeout=10.0)
        return list(response.json()["data"]["activeTargets"])
