"""A saved reference: built from a training window, read back, and compared with live
windows; a planted shift is flagged and traffic like the training window's is not."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from streams.drift_reference import (
    LiveWindow,
    Reference,
    build_reference,
    compare_with_reference,
)

ITEMS = 300
CATEGORY_OF = {str(i): f"c{i % 5}" for i in range(ITEMS)}


def _traffic(rng: np.random.Generator, n: int, inverted: bool = False) -> LiveWindow:
    weights = np.arange(1, ITEMS + 1, dtype=float) ** -1.0
    if inverted:
        weights = weights[::-1]
    weights /= weights.sum()
    return LiveWindow(
        user_ids=[str(u) for u in rng.integers(0, 400, size=n)],
        item_ids=[str(i) for i in rng.choice(ITEMS, size=n, p=weights)],
        actions=list(rng.choice(["view", "click", "rate"], size=n, p=[0.6, 0.3, 0.1])),
        click_ranks=[int(r) for r in rng.geometric(0.3, size=n // 2)],
    )


def _reference(rng: np.random.Generator, n: int = 20_000, window: int = 500) -> Reference:
    training = _traffic(rng, n)
    return build_reference(
        until_ms=1_000_000_000_000,
        user_ids=training.user_ids,
        item_ids=training.item_ids,
        actions=training.actions,
        window_events=window,
        category_of=CATEGORY_OF,
        click_ranks=training.click_ranks,
        din_scores=[0.1, -0.2],
    )


def test_a_reference_reads_back_as_written() -> None:
    reference = _reference(np.random.default_rng(0))
    again = Reference.from_json(reference.to_json())
    assert again == reference
    assert reference.events == 20_000 and reference.window_events == 500
    assert sum(reference.actions.values()) == 20_000
    assert sum(reference.categories.values()) == 20_000
    # Popularity: counts from the even half score the odd half.
    assert sum(reference.item_counts.values()) == 10_000
    assert sum(reference.popularity.values()) == 10_000
    # User activity per chunk of 500 events: 40 chunks, each adding to 500.
    total = sum(float(v) * n for v, n in reference.user_activity.items())
    assert total == 20_000
    assert reference.summary()["din_scores"] == 2


def test_an_unknown_version_is_refused() -> None:
    text = _reference(np.random.default_rng(0)).to_json().replace('"version": 1', '"version": 9')
    with pytest.raises(ValueError, match="version 9"):
        Reference.from_json(text)


def test_live_traffic_like_the_training_window_rarely_drifts() -> None:
    alarms: Counter[str] = Counter()
    for seed in range(20):
        rng = np.random.default_rng(seed)
        reference = _reference(rng)
        results = compare_with_reference(reference, _traffic(rng, 500))
        assert {r.column for r in results} == {
            "action",
            "item_popularity",
            "category",
            "user_activity",
            "click_position",
        }
        alarms.update(r.column for r in results if r.drifted)
    # The reference is large, so the distance tests apply (Evidently's rule), far less
    # jumpy than p-values; what alarms is the persistence rule's to absorb
    # (training.monitoring.policy): three windows in a row at 15 % is 0.3 %.
    assert all(n <= 3 for n in alarms.values()), alarms
    assert alarms["item_popularity"] == alarms["category"] == alarms["action"] == 0, alarms


def test_a_popularity_inversion_drifts_popularity_and_categories_stay() -> None:
    rng = np.random.default_rng(1)
    reference = _reference(rng)
    results = {r.column: r for r in compare_with_reference(reference, _traffic(rng, 500, True))}
    assert results["item_popularity"].drifted
    assert results["item_popularity"].test == "wasserstein"
    assert not results["action"].drifted


def test_a_category_switch_drifts_the_category_mix() -> None:
    rng = np.random.default_rng(2)
    reference = _reference(rng)
    live = _traffic(rng, 500)
    switched = [str((int(i) // 5) * 5) for i in live.item_ids]  # every item now in c0
    results = compare_with_reference(reference, LiveWindow(live.user_ids, switched, live.actions))
    by_column = {r.column: r for r in results}
    assert by_column["category"].drifted and by_column["category"].test == "jensen_shannon"
    assert "click_position" not in by_column  # no live clicks: nothing to compare


def test_user_activity_needs_a_window_of_the_reference_size() -> None:
    rng = np.random.default_rng(3)
    reference = _reference(rng, window=500)
    columns = {r.column for r in compare_with_reference(reference, _traffic(rng, 400))}
    assert "user_activity" not in columns


def test_a_reference_needs_interactions() -> None:
    with pytest.raises(ValueError):
        build_reference(until_ms=1, user_ids=[], item_ids=[], actions=[], window_events=10)
