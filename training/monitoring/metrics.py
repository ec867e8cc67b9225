"""The monitor's Prometheus metrics (``streamrec monitor``, job ``streamrec-monitor``).
Labels are bounded: columns, tests, signals, outcomes, and the model versions served
(one per set, fallback suffixes removed)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from streamrec.infra.metrics import Counter, Gauge
from streams.drift import DriftResult

RETRAIN_OUTCOMES = ("promoted", "challenger", "refused", "failed")
CANARY_OUTCOMES = ("started", "promoted", "rolled_back")


@dataclass
class MonitorMetrics:
    registry: CollectorRegistry
    events: Counter
    assigned: Gauge
    drift_score: Gauge
    drift_detected: Gauge
    online_ndcg: Gauge
    online_hit: Gauge
    online_scored: Counter
    offline_ndcg: Gauge
    offline_hit: Gauge
    streak: Gauge
    triggers: Counter
    retrains: Counter
    canaries: Counter
    retraining: Gauge
    retrain_seconds: Gauge
    reference: Gauge

    @classmethod
    def create(cls) -> MonitorMetrics:
        r = CollectorRegistry()
        metrics = cls(
            registry=r,
            events=Counter(
                "streamrec_monitor_events", "Records the monitor read", ["topic"], registry=r
            ),
            assigned=Gauge(
                "streamrec_monitor_assigned_partitions",
                "Partitions the monitor reads (0 until the consumer joined)",
                registry=r,
            ),
            drift_score=Gauge(
                "streamrec_drift_score",
                "Last drift test per column: a p-value (ks, chi2) or a distance",
                ["column", "test"],
                registry=r,
            ),
            drift_detected=Gauge(
                "streamrec_drift_detected",
                "1 when the column's last test crossed its threshold",
                ["column"],
                registry=r,
            ),
            online_ndcg=Gauge(
                "streamrec_online_ndcg_at_10",
                "NDCG@10 of the served lists on the interactions that followed them",
                ["model_version"],
                registry=r,
            ),
            online_hit=Gauge(
                "streamrec_online_hit_at_10",
                "Hit@10 of the served lists on the interactions that followed them",
                ["model_version"],
                registry=r,
            ),
            online_scored=Counter(
                "streamrec_online_scored_events",
                "Interactions scored against the list served before them",
                ["model_version"],
                registry=r,
            ),
            offline_ndcg=Gauge(
                "streamrec_offline_ndcg_at_10",
                "The serving set's NDCG@10 from its evaluation report",
                ["model_version"],
                registry=r,
            ),
            offline_hit=Gauge(
                "streamrec_offline_hit_at_10",
                "The serving set's Hit@10 from its evaluation report",
                ["model_version"],
                registry=r,
            ),
            streak=Gauge(
                "streamrec_monitor_signal_windows",
                "Consecutive checked windows showing the signal",
                ["signal"],
                registry=r,
            ),
            triggers=Counter(
                "streamrec_monitor_triggers",
                "Retrains triggered, by the signal that persisted",
                ["signal"],
                registry=r,
            ),
            retrains=Counter(
                "streamrec_monitor_retrains",
                "Finished retrains by the gate's outcome (promoted, challenger, refused) or failed",
                ["outcome"],
                registry=r,
            ),
            canaries=Counter(
                "streamrec_monitor_canaries",
                "Canaries of retrained sets the monitor started and decided",
                ["outcome"],
                registry=r,
            ),
            retraining=Gauge("streamrec_monitor_retraining", "1 while a retrain runs", registry=r),
            retrain_seconds=Gauge(
                "streamrec_monitor_retrain_seconds", "Duration of the last retrain", registry=r
            ),
            reference=Gauge(
                "streamrec_monitor_reference_info",
                "1 for the model set whose reference the monitor compares with",
                ["model_set"],
                registry=r,
            ),
        )
        for signal in ("drift", "degradation"):
            metrics.streak.labels(signal).set(0)
            metrics.triggers.labels(signal)
        for outcome in RETRAIN_OUTCOMES:
            metrics.retrains.labels(outcome)
        for outcome in CANARY_OUTCOMES:
            metrics.canaries.labels(outcome)
        metrics.retraining.set(0)
        return metrics

    def record_drift(self, results: list[DriftResult]) -> None:
        for r in results:
            self.drift_score.labels(r.column, r.test).set(r.score)
            self.drift_detected.labels(r.column).set(1 if r.drifted else 0)
