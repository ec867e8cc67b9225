"""The monitor's logic, without Kafka: live records in, checks, decisions and retrains out.

Every ``step_events`` live interactions, once ``window_events`` of them are held, the
newest window is compared with the serving set's reference (drift), and the serving set's
online NDCG@10 with its offline figure (degradation, once ``quality_window`` interactions
were scored). A signal that persists (``training.monitoring.policy``) triggers one retrain
through ``retrain``; its outcome comes back through :meth:`MonitorState.retrain_done`.
Every trigger and outcome is a :class:`streams.events.MonitorDecision` given to ``publish``.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from streams.drift import DriftResult
from streams.drift_reference import LiveWindow, compare_with_reference
from streams.events import MonitorDecision
from streams.experiments import INTERLEAVED_VERSIONS
from training.monitoring.metrics import MonitorMetrics
from training.monitoring.online import OnlineQuality, version_label
from training.monitoring.policy import (
    Persistence,
    PolicyConfig,
    degradation_signal,
    drift_signal,
)
from training.monitoring.reference import MonitoredSet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MonitorConfig:
    window_events: int = 1000  # live interactions per compared window
    step_events: int = 1000  # interactions between two checks: no overlap, by default
    quality_window: int = 500  # scored interactions behind the online figures
    policy: PolicyConfig = field(default_factory=PolicyConfig)

    def __post_init__(self) -> None:
        for name in ("window_events", "step_events", "quality_window"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 < self.policy.drift_share <= 1:
            raise ValueError(f"drift_share is in (0, 1], got {self.policy.drift_share}")
        if self.policy.windows < 1:
            raise ValueError(
                f"the persistence must be at least 1 window, got {self.policy.windows}"
            )


@dataclass(frozen=True)
class RetrainOutcome:
    ok: bool
    seconds: float
    set_id: str | None = None
    promoted: bool | None = None
    challenger: bool = False  # it passed the gate while a champion serves: a canary decides
    reason: str = ""


def _detail(results: list[DriftResult]) -> str:
    parts = [f"{r.column} {r.test}={r.score:.3g}" for r in results if r.drifted]
    return "drifted: " + ", ".join(parts) if parts else "no column drifted"


class MonitorState:
    def __init__(
        self,
        config: MonitorConfig,
        metrics: MonitorMetrics,
        publish: Callable[[MonitorDecision], Any],
        retrain: Callable[[], None],
    ) -> None:
        self.config = config
        self.metrics = metrics
        self._publish = publish
        self._retrain = retrain
        self.serving: MonitoredSet | None = None
        self.policy = Persistence(config.policy)
        self.quality = OnlineQuality(window=config.quality_window)
        self._users: deque[str] = deque(maxlen=config.window_events)
        self._items: deque[str] = deque(maxlen=config.window_events)
        self._actions: deque[str] = deque(maxlen=config.window_events)
        self._clicks: deque[int] = deque(maxlen=config.window_events)
        # DIN's logits of the items the serving set's own lists carried (the newest ones)
        self._din: deque[float] = deque(maxlen=config.window_events)
        self.events_seen = 0
        self.decisions: list[MonitorDecision] = []
        self.last_drift: list[DriftResult] = []
        self._trigger_signal = "drift"

    # -- the serving set -----------------------------------------------------------------

    def set_serving(self, serving: MonitoredSet | None) -> None:
        previous = self.serving
        if previous is not None and (serving is None or serving.set_id != previous.set_id):
            self.metrics.reference.remove(previous.set_id)
        self.serving = serving
        if previous is None or serving is None or serving.set_id != previous.set_id:
            self._din.clear()  # another set's scores are not this reference's
        if serving is None:
            return
        self.metrics.reference.labels(serving.set_id).set(1)
        if serving.offline_ndcg is not None:
            self.metrics.offline_ndcg.labels(serving.label).set(serving.offline_ndcg)
        if serving.offline_hit is not None:
            self.metrics.offline_hit.labels(serving.label).set(serving.offline_hit)
        if previous is None or previous.set_id != serving.set_id:
            log.info(
                "monitoring set %s (%s): offline NDCG@10 %s (%s), reference %s",
                serving.set_id,
                serving.label,
                serving.offline_ndcg,
                serving.offline_source,
                serving.reference.summary() if serving.reference else "none",
            )

    # -- records -------------------------------------------------------------------------

    def served(
        self,
        user_id: str,
        model_version: str,
        items: list[str],
        received_ms: int,
        din_scores: Sequence[float | None] = (),
    ) -> None:
        self.metrics.events.labels("recommendations").inc()
        self.quality.served(user_id, model_version, items, received_ms)
        serving = self.serving
        mixed = INTERLEAVED_VERSIONS in model_version  # two sets' items in one list
        if (
            serving is not None
            and not mixed
            and version_label(model_version) == version_label(serving.label)
        ):
            self._din.extend(s for s in din_scores if s is not None)

    def click(self, rank: int) -> None:
        self.metrics.events.labels("clicks").inc()
        self._clicks.append(rank)

    def interaction(self, user_id: str, item_id: str, action: str, received_ms: int) -> None:
        self.metrics.events.labels("interactions").inc()
        self.events_seen += 1
        self._users.append(user_id)
        self._items.append(item_id)
        self._actions.append(action)
        scored = self.quality.interaction(user_id, item_id, received_ms)
        if scored is not None:
            self.metrics.online_scored.labels(scored.model_version).inc()
            ndcg, hit = self.quality.windows[scored.model_version].means()
            self.metrics.online_ndcg.labels(scored.model_version).set(ndcg)
            self.metrics.online_hit.labels(scored.model_version).set(hit)
        if (
            len(self._items) == self.config.window_events
            and self.events_seen % self.config.step_events == 0
        ):
            self.check()

    # -- checks --------------------------------------------------------------------------

    def check(self) -> None:
        serving = self.serving
        if serving is None:
            return
        if serving.reference is not None:
            live = LiveWindow(
                list(self._users),
                list(self._items),
                list(self._actions),
                list(self._clicks),
                list(self._din),
            )
            results = compare_with_reference(serving.reference, live)
            self.last_drift = results
            self.metrics.record_drift(results)
            drifted = drift_signal(results, self.config.policy.drift_share)
            log.info("drift check at %d events: %s", self.events_seen, _detail(results))
            self._observe("drift", drifted, _detail(results))
        window = self.quality.windows.get(version_label(serving.label))
        if window is not None and window.full:
            online, _hit = window.means()
            degraded = degradation_signal(
                online, serving.offline_ndcg, self.config.policy.degradation_margin
            )
            self._observe(
                "degradation",
                degraded,
                f"online NDCG@10 {online:.4f} against offline {serving.offline_ndcg} "
                f"({serving.offline_source}) over {len(window.ndcg)} scored interactions",
            )

    def _observe(self, signal: str, present: bool, detail: str) -> None:
        fire = self.policy.observe(signal, present, self.events_seen)
        self.metrics.streak.labels(signal).set(self.policy.streak[signal])
        if not fire:
            return
        self.metrics.triggers.labels(signal).inc()
        self._trigger_signal = signal
        self._decide(
            "triggered",
            f"{signal} persisted {self.policy.streak[signal]} windows: {detail}",
        )
        self.policy.started()
        self.metrics.retraining.set(1)
        self._retrain()

    def retrain_done(self, outcome: RetrainOutcome) -> None:
        self.policy.finished(self.events_seen)
        for signal in self.policy.streak:
            self.metrics.streak.labels(signal).set(0)
        self.metrics.retraining.set(0)
        self.metrics.retrain_seconds.set(outcome.seconds)
        if not outcome.ok:
            self.metrics.retrains.labels("failed").inc()
            self._decide("retrain_failed", outcome.reason)
            return
        label = (
            "promoted" if outcome.promoted else "challenger" if outcome.challenger else "refused"
        )
        self.metrics.retrains.labels(label).inc()
        self._decide(
            "retrain_finished",
            f"{outcome.reason} ({outcome.seconds:.0f} s)",
            new_set=outcome.set_id,
            promoted=outcome.promoted,
        )

    def canary(self, outcome: str, detail: str, set_id: str | None) -> None:
        """The canary of a retrained set: ``started``, ``promoted`` or ``rolled_back``."""
        self.metrics.canaries.labels(outcome).inc()
        self._decide(
            f"canary_{outcome}",
            detail,
            new_set=set_id,
            promoted=outcome == "promoted" if outcome != "started" else None,
        )

    def _decide(self, decision: str, detail: str, **extra: Any) -> None:
        event = MonitorDecision(
            decision=decision,
            signal=self._trigger_signal,
            model_set=self.serving.set_id if self.serving else "",
            detail=detail[:1024],
            events_seen=self.events_seen,
            **extra,
        )
        log.warning("monitor: %s (%s) %s", decision, event.signal, event.detail)
        self.decisions.append(event)
        self._publish(event)
