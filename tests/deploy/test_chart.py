"""The Helm chart (deploy/helm/streamrec), checked without a cluster.

`helm lint --strict` passes; `helm template` with the default values and with a second set
(tests/deploy/values-scaled-out.yaml) renders documents that pass the Kubernetes schemas
(strict) and the project's deploy defaults (tests/deploy/checks.py, the same checks as the
plain manifests); the API's HPA scales on CPU and on the request rate that the rendered
prometheus-adapter rule derives from the API's own request counter; the committed
deploy/k8s/streamrec.yaml is the default rendering. Broken values and a broken template are
shown to each check, so a check that accepts anything fails here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from api.metrics import ApiMetrics
from streamrec.paths import REPO_ROOT
from tests.deploy.checks import check_deploy_defaults, check_redis_aof

CHART = REPO_ROOT / "deploy" / "helm" / "streamrec"
RENDER = REPO_ROOT / "deploy" / "helm" / "render.sh"
MANIFEST = REPO_ROOT / "deploy" / "k8s" / "streamrec.yaml"
SCALED_OUT = Path(__file__).with_name("values-scaled-out.yaml")
WORKLOADS = {
    "streamrec-worker",
    "streamrec-api",
    "streamrec-archiver",
    "streamrec-spark",
    "streamrec-monitor",
}


def _helm() -> str:
    pinned = Path(sys.executable).parent / "helm"  # `make install-helm`
    if pinned.exists():
        return str(pinned)
    found = shutil.which("helm")
    assert found, "helm is missing: run `make install-helm`"
    return found


def _run(*args: str, chart: Path = CHART) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_helm(), *args, str(chart)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp")},
    )


def _template(*values: str, chart: Path = CHART) -> list[dict[str, Any]]:
    result = _run("template", "streamrec", *values, chart=chart)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _named(documents: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in documents if d["kind"] == kind}


@pytest.mark.parametrize("values", [[], ["-f", str(SCALED_OUT)]], ids=["default", "scaled-out"])
def test_helm_lint_strict_passes(values: list[str]) -> None:
    result = _run("lint", "--strict", *values)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_default_rendering_holds_the_deploy_defaults() -> None:
    documents = _template()
    check_deploy_defaults(documents)
    check_redis_aof(documents)
    deployments = _named(documents, "Deployment")
    assert set(deployments) == WORKLOADS
    assert set(_named(documents, "StatefulSet")) == {"redis"}
    assert [j["metadata"]["name"] for j in documents if j["kind"] == "Job"] == ["streamrec-init-1"]
    assert deployments["streamrec-worker"]["spec"]["replicas"] == 1
    # the HPA owns the API's replica count: a `replicas` here would fight it on every upgrade
    assert "replicas" not in deployments["streamrec-api"]["spec"]
    config = _named(documents, "ConfigMap")["streamrec"]["data"]
    assert config["STREAMREC_TOPIC_PARTITIONS"] == "3"
    assert config["STREAMREC_SPARK_MASTER"] == "local[*]"
    assert "STREAMREC_RAY_ADDRESS" not in config  # a local Ray in the monitor's pod


def test_the_scaled_out_rendering_holds_the_deploy_defaults() -> None:
    documents = _template("-f", str(SCALED_OUT))
    check_deploy_defaults(documents)
    check_redis_aof(documents)
    deployments = _named(documents, "Deployment")
    assert set(deployments) == WORKLOADS - {"streamrec-archiver"}
    assert "streamrec-archiver" not in _named(documents, "NetworkPolicy")
    assert deployments["streamrec-worker"]["spec"]["replicas"] == 3
    assert deployments["streamrec-api"]["spec"]["replicas"] == 4
    assert not _named(documents, "HorizontalPodAutoscaler")
    assert "streamrec-prometheus-adapter" not in _named(documents, "ConfigMap")
    config = _named(documents, "ConfigMap")["streamrec"]["data"]
    assert config["STREAMREC_TOPIC_PARTITIONS"] == "6"
    assert config["STREAMREC_SPARK_MASTER"] == "spark://spark-master:7077"
    assert config["STREAMREC_RAY_ADDRESS"] == "ray-head:6379"


def test_the_hpa_scales_the_api_on_cpu_and_on_its_request_rate() -> None:
    documents = _template()
    hpa = _named(documents, "HorizontalPodAutoscaler")["streamrec-api"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "streamrec-api")
    assert target["name"] in _named(documents, "Deployment")
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert set(metrics) == {"Resource", "Pods"}
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    assert metrics["Resource"]["resource"]["target"]["type"] == "Utilization"
    rate_metric = metrics["Pods"]["pods"]["metric"]["name"]
    assert metrics["Pods"]["pods"]["target"]["type"] == "AverageValue"

    # prometheus-adapter serves that metric, computed from a counter the API exports.
    adapter = yaml.safe_load(
        _named(documents, "ConfigMap")["streamrec-prometheus-adapter"]["data"]["config.yaml"]
    )
    (rule,) = [r for r in adapter["rules"] if r["name"]["as"] == rate_metric]
    series = rule["seriesQuery"].split("{")[0]
    exported = {
        sample.name
        for family in ApiMetrics().registry.collect()
        for sample in family.samples
        if sample.name.endswith("_count")
    } | {f"{f.name}_count" for f in ApiMetrics().registry.collect() if f.type == "histogram"}
    assert series == "streamrec_api_request_seconds_count" and series in exported
    assert "rate(<<.Series>>{<<.LabelMatchers>>" in rule["metricsQuery"]
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}


def test_the_default_image_is_this_release() -> None:
    """The image tag defaults to the chart's appVersion: pyproject's version, which
    deploy/Dockerfile's image is built and tagged as."""
    import tomllib

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert chart["appVersion"] == version
    api = _named(_template(), "Deployment")["streamrec-api"]
    assert api["spec"]["template"]["spec"]["containers"][0]["image"] == f"streamrec:{version}"


def test_the_committed_manifest_is_the_charts_rendering() -> None:
    result = subprocess.run(
        ["bash", str(RENDER)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "HELM": _helm()},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == MANIFEST.read_text(), (
        "deploy/k8s/streamrec.yaml is not the chart's rendering: run "
        "`bash deploy/helm/render.sh > deploy/k8s/streamrec.yaml`"
    )


@pytest.mark.parametrize(
    ("setting", "refusal"),
    [
        ("worker.replicaz=2", "'replicaz' not allowed"),  # a misspelt key: the values schema
        ("image.tag=latest", "/image/tag"),  # a tag that floats
        ("api.autoscaling.targetCPUUtilizationPercentage=0", "/targetCPUUtilizationPercentage"),
        ("worker.replicas=4", "kafka.partitions"),  # more workers than partitions
        ("api.autoscaling.minReplicas=9", "maxReplicas"),
    ],
)
def test_the_chart_refuses_broken_values(setting: str, refusal: str) -> None:
    result = _run("template", "streamrec", "--set", setting)
    assert result.returncode != 0, f"accepted {setting}"
    assert refusal in result.stderr, result.stderr


def test_the_checks_refuse_a_broken_template(tmp_path: Path) -> None:
    """Helm renders a misspelt Kubernetes field without a word: the schema check is what
    catches it, so it must see the chart's output."""
    chart = tmp_path / "streamrec"
    shutil.copytree(CHART, chart)
    worker = chart / "templates" / "worker.yaml"
    worker.write_text(worker.read_text().replace("imagePullPolicy:", "imagePulPolicy:", 1))
    documents = _template(chart=chart)
    with pytest.raises(kubernetes_validate.ValidationError, match="imagePulPolicy"):
        check_deploy_defaults(documents)
    # and a template that does not parse is refused by helm lint itself
    worker.write_text(worker.read_text() + "\n{{ if }}\n")
    result = _run("lint", "--strict", chart=chart)
    assert result.returncode != 0
