"""The project's deploy defaults as checks over a list of Kubernetes documents, shared by
the plain manifests (test_manifests.py) and the Helm chart's renderings (test_chart.py).

Each check raises AssertionError naming the object that breaks a default.
"""

from __future__ import annotations

import re
from typing import Any

import kubernetes_validate

KUBERNETES_VERSION = "1.33"
# An image tag that names a release down to its patch (or a digest): never `latest`, `7`.
PINNED_IMAGE = re.compile(r"^[\w./-]+:v?\d+\.\d+\.\d+[\w.-]*(@sha256:[0-9a-f]{64})?$")

Document = dict[str, Any]


def pod_specs(documents: list[Document]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (doc["metadata"]["name"], doc["spec"]["template"]["spec"])
        for doc in documents
        if doc["kind"] in {"Deployment", "StatefulSet", "Job"}
    ]


def check_schemas(documents: list[Document]) -> None:
    """Every document against the Kubernetes API schemas; strict: an unknown field fails."""
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def check_pods_unprivileged_with_limits_and_patient_probes(documents: list[Document]) -> None:
    for name, spec in pod_specs(documents):
        pod = spec.get("securityContext", {})
        assert pod.get("runAsNonRoot") is True and pod.get("runAsUser", 0) > 0, name
        assert pod.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
        for container in spec["containers"]:
            where = f"{name}/{container['name']}"
            security = container.get("securityContext", {})
            assert security.get("allowPrivilegeEscalation") is False, where
            assert security.get("readOnlyRootFilesystem") is True, where
            assert security.get("capabilities", {}).get("drop") == ["ALL"], where
            limits = container.get("resources", {}).get("limits", {})
            assert {"cpu", "memory"} <= set(limits), where
            assert PINNED_IMAGE.match(container["image"]), f"{where}: {container['image']}"
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                if probe in container:
                    assert container[probe].get("timeoutSeconds", 1) >= 5, f"{where} {probe}"
            if "livenessProbe" in container:
                live = container["livenessProbe"]
                patience = live.get("periodSeconds", 10) * live.get("failureThreshold", 3)
                assert patience >= 60, f"{where}: restarted after {patience}s without answers"


def check_network_policy_per_pod(documents: list[Document]) -> None:
    """Every long-running pod is selected by a NetworkPolicy of its own (not only the
    default deny, which selects every streamrec pod)."""
    policies = [d for d in documents if d["kind"] == "NetworkPolicy"]
    for document in documents:
        if document["kind"] not in {"Deployment", "StatefulSet"}:
            continue
        labels = document["spec"]["template"]["metadata"]["labels"]
        covering = [
            p
            for p in policies
            if "app" in (selector := p["spec"]["podSelector"].get("matchLabels", {}))
            and selector.items() <= labels.items()
        ]
        assert covering, f"no NetworkPolicy selects {document['metadata']['name']}"


def check_redis_aof(documents: list[Document]) -> None:
    redis = dict(pod_specs(documents))["redis"]["containers"][0]
    assert "--appendonly yes" in " ".join(redis.get("args", []) + redis.get("command", []))


def check_deploy_defaults(documents: list[Document]) -> None:
    """All of the above: what any rendering of the chart and any plain file must hold."""
    check_schemas(documents)
    check_pods_unprivileged_with_limits_and_patient_probes(documents)
    check_network_policy_per_pod(documents)
