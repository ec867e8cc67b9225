"""The Prometheus config `services up` generates: the rules of deploy/prometheus/, and the
stack's processes as file-discovered targets that carry their job label."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from streamrec.infra.prometheus import PrometheusServer, stack_targets
from streamrec.settings import Settings


def test_config_and_targets(tmp_path: Path) -> None:
    settings = Settings(
        state_dir=tmp_path,
        api_port=1801,
        worker_port=1802,
        spark_metrics_port=1803,
        archiver_metrics_port=1804,
        prometheus_port=1805,
        drift_metrics_port=1806,
        monitor_metrics_port=1807,
    )
    server = PrometheusServer(settings)
    server.write_config()
    groups = json.loads((server.targets_dir / "stack.json").read_text())
    assert {g["labels"]["job"]: g["targets"] for g in groups} == {
        "streamrec-api": ["127.0.0.1:1801"],
        "streamrec-worker": ["127.0.0.1:1802"],
        "streamrec-spark": ["127.0.0.1:1803"],
        "streamrec-archiver": ["127.0.0.1:1804"],
        "streamrec-drift": ["127.0.0.1:1806"],
        "streamrec-monitor": ["127.0.0.1:1807"],
    }
    assert [t.name for t in stack_targets(settings)] == [
        "api",
        "worker",
        "spark",
        "archiver",
        "drift",
        "monitor",
    ]
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make install` installs Debian's prometheus"
    # A full check: the config parses and the rule files it names exist and are valid.
    result = subprocess.run(
        [promtool, "check", "config", str(server.config_file)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr

    server.add_targets("extra", stack_targets(settings)[:1], {"stack": "t."})
    assert (server.targets_dir / "extra.json").exists()
    server.remove_targets("extra")
    assert not (server.targets_dir / "extra.json").exists()
