"""The monitor's logic without a broker: a planted shift triggers one retrain within a
bounded number of events, its outcome is logged, and steady traffic triggers nothing."""

from __future__ import annotations

from typing import Any

import numpy as np

from streams.drift_reference import Reference, build_reference
from streams.events import MonitorDecision
from training.monitoring.metrics import MonitorMetrics
from training.monitoring.monitor import MonitorConfig, MonitorState, RetrainOutcome
from training.monitoring.policy import PolicyConfig
from training.monitoring.reference import MonitoredSet, offline_quality

ITEMS = 200
WINDOW, STEP, PERSIST = 400, 400, 2


def _events(rng: np.random.Generator, n: int, inverted: bool = False) -> list[tuple[str, str]]:
    weights = np.arange(1, ITEMS + 1, dtype=float) ** -1.0
    if inverted:
        weights = weights[::-1]
    weights /= weights.sum()
    users = rng.integers(0, 300, size=n)
    items = rng.choice(ITEMS, size=n, p=weights)
    return [(f"u{u}", f"i{i}") for u, i in zip(users, items, strict=True)]


def _reference(training: list[tuple[str, str]], **extra: Any) -> Reference:
    return build_reference(
        until_ms=1,
        user_ids=[u for u, _ in training],
        item_ids=[i for _, i in training],
        actions=["rate"] * len(training),
        window_events=WINDOW,
        **extra,
    )


def _monitor(
    rng: np.random.Generator, reference: Reference | None = None
) -> tuple[MonitorState, list[MonitorDecision], list[int]]:
    if reference is None:
        categories = {f"i{i}": f"c{i // 50}" for i in range(ITEMS)}  # by popularity
        reference = _reference(_events(rng, 20_000), category_of=categories)
    published: list[MonitorDecision] = []
    retrains: list[int] = []
    config = MonitorConfig(WINDOW, STEP, 100, PolicyConfig(windows=PERSIST))
    state = MonitorState(
        config,
        MonitorMetrics.create(),
        publish=published.append,
        retrain=lambda: retrains.append(state.events_seen),
    )
    state.set_serving(MonitoredSet("set1", "cascade-a", "run", reference, 0.3, 0.5, "static"))
    return state, published, retrains


def _feed(state: MonitorState, events: list[tuple[str, str]]) -> None:
    for n, (user, item) in enumerate(events):
        state.interaction(user, item, "rate", received_ms=n)


def test_a_popularity_inversion_triggers_one_retrain_within_the_bound() -> None:
    rng = np.random.default_rng(0)
    state, published, retrains = _monitor(rng)
    steady = 2000
    _feed(state, _events(rng, steady))
    assert retrains == [] and published == []
    _feed(state, _events(rng, 3000, inverted=True))
    assert len(retrains) == 1  # no second trigger while it runs
    # A window must fill with shifted traffic, then persist: window + persist * step.
    assert retrains[0] - steady <= WINDOW + PERSIST * STEP
    triggered = published[0]
    assert triggered.decision == "triggered" and triggered.signal == "drift"
    assert triggered.model_set == "set1" and "item_popularity" in triggered.detail
    state.retrain_done(RetrainOutcome(True, 42.0, "set2", True, "no champion: promoted"))
    finished = published[-1]
    assert finished.decision == "retrain_finished"
    assert finished.new_set == "set2" and finished.promoted is True
    assert state.metrics.retrains.labels("promoted")._value.get() == 1  # noqa: SLF001


def test_steady_traffic_triggers_nothing() -> None:
    rng = np.random.default_rng(1)
    state, published, retrains = _monitor(rng)
    _feed(state, _events(rng, 5000))
    assert retrains == [] and published == []
    assert state.last_drift  # the windows were checked
    assert state.policy.streak["drift"] < PERSIST


def test_degradation_persists_into_a_retrain_and_a_failure_is_logged() -> None:
    rng = np.random.default_rng(2)
    state, published, retrains = _monitor(rng)
    lists = [f"i{i}" for i in range(20)]
    for n, (user, item) in enumerate(_events(rng, 2000)):
        # Every list misses the item that follows it: online NDCG@10 is 0, offline 0.3.
        state.served(user, "cascade-a+rank:recall", [x for x in lists if x != item], n * 2)
        state.interaction(user, item, "rate", n * 2 + 1)
    assert retrains and published[0].signal == "degradation"
    state.retrain_done(RetrainOutcome(False, 3.0, reason="streamrec retrain exited 2"))
    assert published[-1].decision == "retrain_failed"


def test_offline_quality_prefers_the_prequential_figure() -> None:
    report = {
        "streaming": {"all": {"arms": {"cascade live": {"ndcg@10": 0.2, "hit@10": 0.4}}}},
        "cascade": {"mean": {"cascade": {"ndcg@10": 0.1, "hit@10": 0.3}}},
    }
    assert offline_quality(report) == (0.2, 0.4, "prequential test, cascade live")
    report["streaming"] = None
    assert offline_quality(report) == (0.1, 0.3, "static test split")
    assert offline_quality({})[2] == "none"


def _din_monitor(reference_scores: np.ndarray) -> MonitorState:
    rng = np.random.default_rng(5)
    reference = _reference(_events(rng, 4000), din_scores=reference_scores.tolist())
    return _monitor(rng, reference)[0]


def _din_result(state: MonitorState, served_scores: np.ndarray, version: str) -> list[str]:
    """Serve lists whose DIN scores are ``served_scores`` under ``version``, then check."""
    events = _events(np.random.default_rng(6), WINDOW)
    for n, (user, item) in enumerate(events):
        scores = served_scores[n * 10 % len(served_scores) :][:10].tolist()
        state.served(user, version, [f"i{j}" for j in range(10)], n, scores)
        state.interaction(user, item, "rate", n)
    return [f"{r.column}:{r.drifted}" for r in state.last_drift if r.column == "din_score"]


def test_din_scores_of_the_served_set_are_compared_with_its_reference() -> None:
    rng = np.random.default_rng(7)
    reference = rng.normal(0.0, 1.0, 5000)
    same = _din_result(_din_monitor(reference), rng.normal(0.0, 1.0, 4000), "cascade-a")
    assert same == ["din_score:False"]
    shifted = _din_result(_din_monitor(reference), rng.normal(1.5, 1.0, 4000), "cascade-a+x")
    assert shifted == ["din_score:True"]
    # Another set's lists (a challenger, the baseline) are not this reference's population.
    other = _din_result(_din_monitor(reference), rng.normal(1.5, 1.0, 4000), "cascade-b")
    assert other == []
    # An interleaved list mixes two sets' items: not compared either.
    mixed = "cascade-a & cascade-b"
    assert _din_result(_din_monitor(reference), rng.normal(1.5, 1.0, 4000), mixed) == []


def test_too_few_din_scores_are_not_compared() -> None:
    rng = np.random.default_rng(8)
    state = _din_monitor(rng.normal(0.0, 1.0, 5000))
    # 15 scored lists of 10: under the floor of 200 scores, however far off they are.
    events = _events(rng, WINDOW)
    for n, (user, item) in enumerate(events):
        scores = [5.0] * 10 if n < 15 else []
        state.served(user, "cascade-a", [f"i{j}" for j in range(10)], n, scores)
        state.interaction(user, item, "rate", n)
    assert state.last_drift and "din_score" not in {r.column for r in state.last_drift}
