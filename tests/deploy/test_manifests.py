"""The deploy files, checked without a Docker engine or a cluster.

- `deploy/k8s/*.yaml` against the Kubernetes API schemas (strict: an unknown field fails),
  with kubernetes-validate, which ships those schemas in its PyPI package;
- `docker-compose.yml` with the Compose specification's own loader (compose-go's
  validator, which `make install` builds with `go install`);
- and the defaults issue 19 asks for: non-root, read-only containers with limits,
  probes that wait for a busy event loop, a NetworkPolicy for every pod, tags that do not
  float, and nothing published beyond 127.0.0.1 by default.

Each validator is also shown a broken copy, so a validator that accepts anything fails here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from streamrec.paths import REPO_ROOT
from tests.deploy.checks import (
    KUBERNETES_VERSION,
    PINNED_IMAGE,
    check_network_policy_per_pod,
    check_pods_unprivileged_with_limits_and_patient_probes,
    check_redis_aof,
    check_schemas,
    pod_specs,
)

# streamrec.yaml is the Helm chart's rendering (test_chart.py holds it equal to it);
# monitoring.yaml is written by hand.
MANIFESTS = sorted((REPO_ROOT / "deploy" / "k8s").glob("*.yaml"))
COMPOSE = REPO_ROOT / "docker-compose.yml"


def _documents() -> list[dict[str, Any]]:
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


def _pod_specs() -> list[tuple[str, dict[str, Any]]]:
    return pod_specs(_documents())


def test_manifests_match_the_kubernetes_schemas() -> None:
    documents = _documents()
    assert {"Deployment", "StatefulSet", "NetworkPolicy"} <= {d["kind"] for d in documents}
    check_schemas(documents)


def test_the_schema_check_refuses_a_misspelt_field() -> None:
    worker = next(
        d
        for d in _documents()
        if d["kind"] == "Deployment" and d["metadata"]["name"] == "streamrec-worker"
    )
    worker["spec"]["template"]["spec"]["containers"][0]["imag"] = "typo"
    with pytest.raises(kubernetes_validate.ValidationError, match="imag"):
        kubernetes_validate.validate(worker, KUBERNETES_VERSION, strict=True)


def test_pods_run_unprivileged_with_limits_and_patient_probes() -> None:
    documents = _documents()
    assert {name for name, _ in pod_specs(documents)} >= {
        "streamrec-api",
        "streamrec-worker",
        "redis",
    }
    check_pods_unprivileged_with_limits_and_patient_probes(documents)


def test_every_long_running_pod_has_a_network_policy() -> None:
    check_network_policy_per_pod(_documents())


def test_redis_persists_with_aof_in_every_deployment() -> None:
    check_redis_aof(_documents())
    compose = yaml.safe_load(COMPOSE.read_text())
    assert "--appendonly yes" in " ".join(compose["services"]["redis"]["command"])


def _compose_spec() -> str:
    tool = Path(sys.executable).parent / "compose-spec"
    if not tool.exists():
        found = shutil.which("compose-spec")
        assert found, "compose-spec (compose-go's validator) is missing: run `make install`"
        return found
    return str(tool)


def _check_compose(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_compose_spec(), "--format", "json", str(path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},  # the file's defaults, not this shell's STREAMREC_*
    )


def test_compose_file_matches_the_compose_specification() -> None:
    result = _check_compose(COMPOSE)
    assert result.returncode == 0, result.stderr
    import json

    project = json.loads(result.stdout)
    services = project["services"]
    assert {"kafka", "redis", "worker", "api", "prometheus"} <= set(services)
    for name, service in services.items():
        assert PINNED_IMAGE.match(service["image"]), f"{name}: {service['image']}"
        for port in service.get("ports", []):
            assert port.get("host_ip") == "127.0.0.1", f"{name} publishes {port}"
        if service["image"].startswith("streamrec:"):
            assert service.get("user") == "10001:10001", name
            assert service.get("read_only") is True, name


def test_the_compose_check_refuses_a_wrong_file(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace("healthcheck:", "health_check:", 1))
    result = _check_compose(broken)
    assert result.returncode != 0
    assert "health_check" in result.stderr + result.stdout


def test_the_image_is_pinned_and_runs_as_a_user() -> None:
    dockerfile = (REPO_ROOT / "deploy" / "Dockerfile").read_text()
    bases = re.findall(r"^FROM (\S+)", dockerfile, re.MULTILINE)  # every stage's
    assert bases and all(PINNED_IMAGE.match(base) for base in bases), bases
    assert re.search(r"^ARG UV_VERSION=\d+\.\d+\.\d+$", dockerfile, re.MULTILINE)
    user = re.findall(r"^USER (\S+)", dockerfile, re.MULTILINE)
    assert user and not user[-1].startswith(("root", "0")), user


def test_the_image_holds_every_package_and_every_process_has_a_pod() -> None:
    """The image copies each package the wheel installs (a missing one fails at import in
    the container, nowhere else), and Kubernetes runs each long-running process compose runs."""
    import tomllib

    dockerfile = (REPO_ROOT / "deploy" / "Dockerfile").read_text()
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    packages = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    copied = set(re.findall(r"^COPY (\w+) \./\1$", dockerfile, re.MULTILINE))
    assert set(packages) <= copied, f"not copied into the image: {set(packages) - copied}"
    # `streamrec spark` needs Java and the connector jars where the settings look for them.
    assert "openjdk-17-jre-headless" in dockerfile
    assert "STREAMREC_SPARK_JARS_DIR=/opt/spark-jars" in dockerfile

    compose = yaml.safe_load(COMPOSE.read_text())["services"]
    compose_commands = {
        s["command"][0]
        for s in compose.values()
        if s.get("image", "").startswith("streamrec:") and "command" in s
    }
    pods = {
        c["args"][0]
        for _, spec in _pod_specs()
        for c in spec["containers"]
        if c["image"].startswith("streamrec:") and c.get("args")
    }
    long_running = compose_commands - {"topics", "features", "init"}
    assert long_running <= pods, f"compose runs {long_running - pods}; no Kubernetes pod does"
