"""The recording and alerting rules in deploy/prometheus/, checked by Prometheus's promtool:
they parse, and each alert fires on the synthetic series that break its objective and
stays silent on those that keep it (alerting.rules.test.yml)."""

from __future__ import annotations

import shutil
import subprocess

from streamrec.infra.prometheus import RULE_FILES, RULES_DIR


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make install` installs Debian's prometheus"
    return subprocess.run(
        [promtool, *args], cwd=RULES_DIR, capture_output=True, text=True, timeout=60
    )


def test_rules_pass_promtool_check() -> None:
    result = _promtool("check", "rules", *RULE_FILES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_fire_on_broken_objectives_only() -> None:
    result = _promtool("test", "rules", "alerting.rules.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_config_passes_promtool_check() -> None:
    # Its rule paths are the container's; the config is checked with the syntax only.
    result = _promtool("check", "config", "--syntax-only", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
