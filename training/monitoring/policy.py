"""When a signal becomes a retrain: it must be broad and persist over consecutive windows.

One drifted column is weak evidence: live traffic is never the training window again (on
MovieLens-100K the category mix of a 1,000-event window of the log's own continuation is
at Jensen–Shannon 0.07–0.13 from its training window's, around the 0.1 threshold). So,
as Evidently's dataset drift does, a window drifts when at least ``drift_share`` of its
columns do (0.5), and a shift that matters drifts window after window: a signal triggers
only after ``windows`` consecutive checks show it, one clean check resetting it (the
monitor's windows do not overlap by default, so consecutive checks are separate samples).
No new trigger while a retrain runs, nor for ``cooldown_events`` live interactions after
it ends: the new set needs traffic of its own before it is judged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from streams.drift import DriftResult

SIGNALS = ("drift", "degradation")


@dataclass(frozen=True)
class PolicyConfig:
    windows: int = 3  # consecutive checks a signal must persist
    drift_share: float = 0.5  # of the columns that must drift for the window to drift
    degradation_margin: float = 0.05  # online NDCG@10 below offline by at least this
    cooldown_events: int = 0


def drift_signal(results: Sequence[DriftResult], share: float = 0.5) -> bool:
    drifted = sum(r.drifted for r in results)
    return drifted > 0 and drifted >= share * len(results)


def degradation_signal(
    online_ndcg: float | None, offline_ndcg: float | None, margin: float
) -> bool:
    if online_ndcg is None or offline_ndcg is None:
        return False
    return offline_ndcg - online_ndcg > margin


@dataclass
class Persistence:
    config: PolicyConfig = field(default_factory=PolicyConfig)
    streak: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SIGNALS, 0))
    retraining: bool = False
    quiet_until: int = 0  # events_seen before which no trigger fires

    def observe(self, signal: str, present: bool, events_seen: int) -> bool:
        """Record one checked window; True when the signal has now persisted long enough
        and a retrain may start."""
        self.streak[signal] = self.streak[signal] + 1 if present else 0
        if self.retraining or events_seen < self.quiet_until:
            return False
        return self.streak[signal] >= self.config.windows

    def started(self) -> None:
        self.retraining = True

    def finished(self, events_seen: int) -> None:
        self.retraining = False
        self.quiet_until = events_seen + self.config.cooldown_events
        self.streak = dict.fromkeys(SIGNALS, 0)
