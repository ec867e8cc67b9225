"""The Grafana dashboards, as code: built with grafana-foundation-sdk, written as JSON into
``deploy/grafana/dashboards/`` (``streamrec dashboards write``), which docker-compose and
Kubernetes provision. Every panel reads the Prometheus that scrapes the stack; the
integration test runs each panel's queries against the live one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamrec.paths import REPO_ROOT

DASHBOARD_DIR = REPO_ROOT / "deploy" / "grafana" / "dashboards"
# The same dashboards, and Prometheus's rules, as Kubernetes ConfigMaps that the pods of
# deploy/k8s/monitoring.yaml mount (JSON is YAML); generated, so there is one source.
K8S_CONFIGMAP = REPO_ROOT / "deploy" / "k8s" / "grafana-dashboards.json"
K8S_RULES_CONFIGMAP = REPO_ROOT / "deploy" / "k8s" / "prometheus-rules.json"
RULES_DIR = REPO_ROOT / "deploy" / "prometheus"
RULE_FILES = ("recording.rules.yml", "alerting.rules.yml")
DATASOURCE_UID = "prometheus"  # the provisioned datasource (deploy/grafana/provisioning)


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class PanelSpec:
    title: str
    unit: str
    queries: tuple[Query, ...]
    description: str = ""


def _quantiles(metric: str, by: str, window: str = "1m") -> tuple[Query, ...]:
    """p50, p95 and p99 of a histogram, per ``by`` label."""
    return tuple(
        Query(
            f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket[{window}])))",
            f"{{{{{by}}}}} p{round(q * 100)}",
        )
        for q in (0.5, 0.95, 0.99)
    )


def _ratio(numerator: str, denominator: str, window: str = "1h") -> str:
    """One experiment counter over another per experiment and variant, in ``window``."""
    counter = "streamrec_experiment_events_total"
    by = "sum by (experiment, variant)"
    return (
        f'{by} (increase({counter}{{what="{numerator}"}}[{window}])) / '
        f'{by} (increase({counter}{{what="{denominator}"}}[{window}]))'
    )


# Rows of the overview, top to bottom. The mission's list: Kafka lag, Redis hits, Spark job
# time, latency, throughput; then freshness, the worker and the models.
OVERVIEW: dict[str, tuple[PanelSpec, ...]] = {
    "Traffic and latency": (
        PanelSpec(
            "Requests per second by route",
            "reqps",
            (Query("sum by (route) (route_status:streamrec_api_requests:rate1m)", "{{route}}"),),
        ),
        PanelSpec(
            "Request latency by route",
            "s",
            _quantiles("streamrec_api_request_seconds", "route"),
            "Time to the first response byte (SSE: the first event)",
        ),
        PanelSpec(
            "Recommendation latency by variant",
            "s",
            _quantiles("streamrec_api_recommend_seconds", "variant"),
        ),
        PanelSpec(
            "Errors: 5xx ratio and refused events",
            "percentunit",
            (
                Query(
                    'sum(rate(streamrec_api_request_seconds_count{status=~"5.."}[1m]))'
                    " / sum(rate(streamrec_api_request_seconds_count[1m]))",
                    "5xx ratio",
                ),
                Query(
                    "sum by (status) (rate(streamrec_api_request_seconds_count"
                    '{status=~"4..|5.."}[1m])) / scalar(sum(rate('
                    "streamrec_api_request_seconds_count[1m])))",
                    "{{status}}",
                ),
            ),
        ),
    ),
    "Kafka": (
        PanelSpec(
            "Consumer lag by process",
            "short",
            (Query("job:streamrec_consumer_lag_records:sum", "{{job}}"),),
        ),
        PanelSpec(
            "Consumer lag by partition",
            "short",
            (
                Query("streamrec_worker_consumer_lag", "worker {{topic}}[{{partition}}]"),
                Query(
                    "streamrec_consumer_lag_records",
                    "{{job}} {{query}} {{topic}}[{{partition}}]",
                ),
            ),
        ),
        PanelSpec(
            "Events folded per second",
            "ops",
            (
                Query("sum by (topic) (rate(streamrec_worker_events_total[1m]))", "{{topic}}"),
                Query(
                    "sum by (topic) (rate(streamrec_archiver_records_total[1m]))",
                    "archived {{topic}}",
                ),
            ),
        ),
    ),
    "Freshness": (
        PanelSpec(
            "Event to feature",
            "s",
            (
                Query(
                    "histogram_quantile(0.5, sum by (le) "
                    "(rate(streamrec_event_to_feature_seconds_bucket[1m])))",
                    "p50",
                ),
                Query("streamrec_event_to_feature_seconds:p95_5m", "p95 (5m)"),
            ),
            "From a record's append to the log to its user's row in the online store",
        ),
        PanelSpec(
            "Feature change to SSE list",
            "s",
            (
                Query(
                    "histogram_quantile(0.95, sum by (le) "
                    "(rate(streamrec_api_sse_update_seconds_bucket[5m])))",
                    "p95",
                ),
            ),
            "From the worker's notice to the new list on the stream; add the event-to-"
            "feature time for event to SSE",
        ),
    ),
    "Online store (Redis)": (
        PanelSpec(
            "Reads: hits and misses",
            "ops",
            (
                Query(
                    "sum by (view, outcome) (rate(streamrec_api_feature_reads_total[1m]))",
                    "{{view}} {{outcome}}",
                ),
            ),
            "A miss is a user or an item without a row yet",
        ),
        PanelSpec(
            "Read latency",
            "s",
            _quantiles("streamrec_api_feature_read_seconds", "view"),
        ),
        PanelSpec(
            "Worker push time",
            "s",
            _quantiles("streamrec_worker_push_seconds", "source"),
        ),
    ),
    "Stream processors": (
        PanelSpec(
            "Worker batch size",
            "short",
            _quantiles("streamrec_worker_batch_size", "topic"),
        ),
        PanelSpec(
            "Worker fold time per batch",
            "s",
            _quantiles("streamrec_worker_batch_seconds", "topic"),
        ),
        PanelSpec(
            "Impression-click join",
            "short",
            (
                Query("sum(streamrec_join_requests_held)", "requests held"),
                Query(
                    "sum by (what) (rate(streamrec_join_expired_total[5m])) * 60",
                    "{{what}} forgotten per minute",
                ),
            ),
            "Held until the attribution window and its grace pass (70 minutes of served "
            "lists); a count that only grows means a partition's clock is stuck",
        ),
        PanelSpec(
            "Spark batch duration",
            "s",
            _quantiles("streamrec_spark_batch_seconds", "query", "5m"),
        ),
        PanelSpec(
            "Spark rows per window query",
            "rowsps",
            (
                Query(
                    "sum by (query) (rate(streamrec_spark_input_rows_total[1m]))", "{{query}} read"
                ),
                Query(
                    "sum by (query) (rate(streamrec_spark_rows_pushed_total[1m]))",
                    "{{query}} pushed",
                ),
            ),
        ),
    ),
    "Models and health": (
        PanelSpec(
            "Model serving",
            "reqps",
            (
                Query(
                    "sum by (model) (rate(streamrec_api_inference_seconds_count[1m]))", "{{model}}"
                ),
                Query(
                    "max by (model_version, model_set) (streamrec_api_model_info == 1)",
                    "{{model_version}}",
                ),
            ),
            "Inference by model (the cascade, or the baseline item-kNN while no set passed "
            "the gate), "
            "and the version of the set being served",
        ),
        PanelSpec(
            "Processes up",
            "short",
            (Query('up{job=~"streamrec-.*"}', "{{job}}"),),
        ),
    ),
    "Drift, quality and retraining": (
        PanelSpec(
            "Drift against the serving set's reference",
            "short",
            (
                Query("streamrec_drift_score", "{{job}} {{column}} {{test}}"),
                Query("max by (column) (streamrec_drift_detected)", "{{column}} drifted"),
            ),
            "p-values (ks, chi2: drift below 0.05) and distances (wasserstein, "
            "jensen_shannon: drift at 0.1 or more), from `streamrec monitor` (live windows) "
            "and `streamrec drift` (the archive)",
        ),
        PanelSpec(
            "Online quality against the offline figure",
            "percentunit",
            (
                Query("streamrec_online_ndcg_at_10", "online NDCG@10 {{model_version}}"),
                Query("streamrec_online_hit_at_10", "online Hit@10 {{model_version}}"),
                Query("streamrec_offline_ndcg_at_10", "offline NDCG@10 {{model_version}}"),
            ),
            "Each user's next new item ranked in the last list served to them, over the "
            "newest scored interactions; offline: the set's own evaluation report",
        ),
        PanelSpec(
            "Signals, triggers and retrains",
            "short",
            (
                Query("max by (signal) (streamrec_monitor_signal_windows)", "{{signal}} windows"),
                Query(
                    "sum by (signal) (increase(streamrec_monitor_triggers_total[15m]))",
                    "{{signal}} triggers (15m)",
                ),
                Query(
                    "sum by (outcome) (increase(streamrec_monitor_retrains_total[1h]))",
                    "retrains {{outcome}} (1h)",
                ),
                Query(
                    "sum by (outcome) (increase(streamrec_monitor_canaries_total[1h]))",
                    "canaries {{outcome}} (1h)",
                ),
            ),
            "Consecutive windows showing each signal (a retrain at --persist), the retrains "
            "they triggered, what the registry gate made of them, and the canaries of "
            "challengers (started, promoted, rolled back)",
        ),
        PanelSpec(
            "Retrain duration",
            "s",
            (
                Query("max(streamrec_monitor_retrain_seconds)", "last retrain"),
                Query("max(streamrec_monitor_retraining)", "running"),
            ),
        ),
    ),
    "Experiments": (
        PanelSpec(
            "Experiment CTR per variant (last hour)",
            "percentunit",
            (
                Query(_ratio("clicks", "impressions"), "{{experiment}} {{variant}} lists clicked"),
                Query(
                    _ratio("item_clicks", "item_impressions"), "{{experiment}} {{variant}} items"
                ),
            ),
            "A/B: the share of served lists with an attributed click (what the two-proportion "
            "test compares); both modes: clicks per item shown, per variant (per team when "
            "interleaved). Folded by the worker from the log; `GET /admin/experiments/{name}` "
            "has the whole experiment's table, its intervals and p-value",
        ),
        PanelSpec(
            "Experiment counters per variant",
            "short",
            (
                Query(
                    "sum by (experiment, variant, what) "
                    "(increase(streamrec_experiment_events_total[1h]))",
                    "{{experiment}} {{variant}} {{what}}",
                ),
            ),
            "Impressions, clicks, item impressions and clicks, conversions and interleaving "
            "wins folded in the last hour",
        ),
    ),
}


def overview_panels() -> list[PanelSpec]:
    return [panel for row in OVERVIEW.values() for panel in row]


def build_overview() -> dict[str, Any]:
    """The overview dashboard as the JSON model Grafana imports."""
    from grafana_foundation_sdk.builders import common, dashboard, prometheus, timeseries
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.common import (
        DataSourceRef,
        LegendDisplayMode,
        LegendPlacement,
    )
    from grafana_foundation_sdk.models.dashboard import GridPos

    source = DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)
    board = (
        dashboard.Dashboard("streamrec overview")
        .uid("streamrec-overview")
        .tags(["streamrec"])
        .refresh("10s")
        .time("now-30m", "now")
    )
    y = 0
    for row_title, panels in OVERVIEW.items():
        board = board.with_row(dashboard.Row(row_title).grid_pos(GridPos(h=1, w=24, x=0, y=y)))
        y += 1
        for i, spec in enumerate(panels):
            panel = (
                timeseries.Panel()
                .title(spec.title)
                .description(spec.description)
                .unit(spec.unit)
                .datasource(source)
                .legend(
                    common.VizLegendOptions()
                    .show_legend(True)
                    .display_mode(LegendDisplayMode.LIST)
                    .placement(LegendPlacement.BOTTOM)
                )
                .grid_pos(GridPos(h=8, w=12, x=12 * (i % 2), y=y + 8 * (i // 2)))
            )
            for ref, query in zip("ABCDEFGH", spec.queries, strict=False):
                panel = panel.with_target(
                    prometheus.Dataquery()
                    .expr(query.expr)
                    .legend_format(query.legend)
                    .ref_id(ref)
                    .datasource(source)
                )
            board = board.with_panel(panel)
        y += 8 * ((len(panels) + 1) // 2)
    model: dict[str, Any] = json.loads(JSONEncoder(sort_keys=True).encode(board.build()))
    return model


def dashboard_files() -> dict[str, str]:
    """File name → JSON text of every generated dashboard."""
    return {
        "streamrec-overview.json": json.dumps(build_overview(), indent=2, sort_keys=True) + "\n"
    }


def configmap_text(name: str, files: dict[str, str]) -> str:
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "annotations": {"generated-by": "streamrec dashboards write"},
        },
        "data": files,
    }
    return json.dumps(configmap, indent=2, sort_keys=True) + "\n"


def generated(folder: Path = DASHBOARD_DIR, configmap: Path = K8S_CONFIGMAP) -> dict[Path, str]:
    """Every generated file: the dashboards and the ConfigMaps."""
    files = dashboard_files()
    out = {folder / name: text for name, text in files.items()}
    out[configmap] = configmap_text("streamrec-grafana-dashboards", files)
    rules = {name: (RULES_DIR / name).read_text() for name in RULE_FILES}
    out[configmap.with_name(K8S_RULES_CONFIGMAP.name)] = configmap_text(
        "streamrec-prometheus-rules", rules
    )
    return out


def write_dashboards(folder: Path = DASHBOARD_DIR, configmap: Path = K8S_CONFIGMAP) -> list[Path]:
    written = []
    for path, text in generated(folder, configmap).items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def stale_dashboards(folder: Path = DASHBOARD_DIR, configmap: Path = K8S_CONFIGMAP) -> list[Path]:
    """Generated files that differ from what is on disk (regenerate and commit them)."""
    return [
        path
        for path, text in generated(folder, configmap).items()
        if not path.exists() or path.read_text() != text
    ]
