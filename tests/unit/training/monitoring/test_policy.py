"""A signal triggers a retrain only when it persists, and never during one."""

from __future__ import annotations

from streams.drift import DriftResult
from training.monitoring.policy import (
    Persistence,
    PolicyConfig,
    degradation_signal,
    drift_signal,
)


def test_a_signal_must_persist_over_consecutive_windows() -> None:
    policy = Persistence(PolicyConfig(windows=3))
    assert not policy.observe("drift", True, 100)
    assert not policy.observe("drift", True, 200)
    assert not policy.observe("drift", False, 300)  # one clean window resets it
    assert not policy.observe("drift", True, 400)
    assert not policy.observe("drift", True, 500)
    assert policy.observe("drift", True, 600)
    assert policy.streak == {"drift": 3, "degradation": 0}


def test_no_trigger_while_retraining_nor_in_the_cooldown() -> None:
    policy = Persistence(PolicyConfig(windows=1, cooldown_events=1000))
    assert policy.observe("degradation", True, 10)
    policy.started()
    assert not policy.observe("degradation", True, 20)
    policy.finished(events_seen=30)
    assert policy.streak["degradation"] == 0
    assert not policy.observe("degradation", True, 500)
    assert policy.observe("degradation", True, 1030)


def test_degradation_is_online_below_offline_by_more_than_the_margin() -> None:
    assert degradation_signal(0.20, 0.30, 0.05)
    assert not degradation_signal(0.27, 0.30, 0.05)
    assert not degradation_signal(None, 0.30, 0.05)
    assert not degradation_signal(0.1, None, 0.05)


def test_a_window_drifts_when_at_least_half_its_columns_do() -> None:
    def window(*drifted: bool) -> list[DriftResult]:
        return [DriftResult(f"c{i}", "jensen_shannon", 0.2, d) for i, d in enumerate(drifted)]

    assert not drift_signal(window(True, False, False, False))
    assert drift_signal(window(True, True, False, False))
    assert drift_signal(window(True, False, False, False), share=0.25)
    assert not drift_signal(window(False, False))
    assert not drift_signal([])
