"""The generated dashboards: the committed JSON is what the code generates, and each panel
is a Prometheus timeseries panel over the provisioned datasource."""

from __future__ import annotations

import json
from pathlib import Path

from streamrec.infra.dashboards import (
    DASHBOARD_DIR,
    DATASOURCE_UID,
    build_overview,
    overview_panels,
    stale_dashboards,
    write_dashboards,
)


def test_committed_dashboards_are_current() -> None:
    assert stale_dashboards() == [], "run `streamrec dashboards write` and commit the result"


def test_a_changed_file_is_reported_stale(tmp_path: Path) -> None:
    configmap = tmp_path / "k8s" / "grafana-dashboards.json"
    written = write_dashboards(tmp_path / "dashboards", configmap)
    assert stale_dashboards(tmp_path / "dashboards", configmap) == []
    written[0].write_text(written[0].read_text().replace("streamrec overview", "edited"))
    assert stale_dashboards(tmp_path / "dashboards", configmap) == [written[0]]


def test_every_panel_queries_the_provisioned_prometheus() -> None:
    model = build_overview()
    panels = [p for p in model["panels"] if p["type"] == "timeseries"]
    assert [p["title"] for p in panels] == [spec.title for spec in overview_panels()]
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}
            assert target["expr"]
    on_disk = json.loads((DASHBOARD_DIR / "streamrec-overview.json").read_text())
    assert on_disk["uid"] == "streamrec-overview"
