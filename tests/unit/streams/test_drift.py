"""The drift tests: a planted shift is flagged, the same distribution is not."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from streams.drift import Window, categorical_drift, compare, numeric_drift


def _sample(rng: np.random.Generator, n: int, users: int, items: int, skew: float) -> Window:
    # Item popularity is Zipf-like; skew > 0 moves the mass to the tail (an inversion).
    weights = np.arange(1, items + 1, dtype=float) ** -1.0
    if skew:
        weights = weights[::-1] ** skew
    weights /= weights.sum()
    item_ids = [str(i) for i in rng.choice(items, size=n, p=weights)]
    user_ids = [str(u) for u in rng.integers(0, users, size=n)]
    actions = list(rng.choice(["view", "click", "rate"], size=n, p=[0.6, 0.3, 0.1]))
    categories = {str(i): f"c{i % 5}" for i in range(items)}
    return Window.of(user_ids, item_ids, actions, categories)


# Each test has a 5 % false-alarm rate by design (p < 0.05), so the checks count alarms
# over seeded repetitions instead of trusting one draw.
RUNS = 30


@pytest.mark.parametrize("n", [500, 20_000])  # the small-sample and the large-sample tests
def test_same_traffic_rarely_alarms(n: int) -> None:
    alarms: Counter[str] = Counter()
    for seed in range(RUNS):
        rng = np.random.default_rng(seed)
        reference = _sample(rng, n, users=200, items=300, skew=0)
        current = _sample(rng, n, users=200, items=300, skew=0)
        results = compare(reference, current)
        assert [r.column for r in results] == [
            "action",
            "item_popularity",
            "user_activity",
            "category",
        ]
        alarms.update(r.column for r in results if r.drifted)
    assert all(count <= 4 for count in alarms.values()), alarms  # at most ~13 %


@pytest.mark.parametrize("n", [500, 20_000])
def test_a_popularity_inversion_is_flagged(n: int) -> None:
    flagged = 0
    for seed in range(RUNS):
        rng = np.random.default_rng(seed)
        reference = _sample(rng, n, users=200, items=300, skew=0)
        current = _sample(rng, n, users=200, items=300, skew=1.0)
        flagged += "item_popularity" in {r.column for r in compare(reference, current) if r.drifted}
    assert flagged == RUNS


def test_tests_and_thresholds_follow_the_sample_size() -> None:
    small = numeric_drift("x", [1.0, 2.0, 3.0] * 10, [1.0, 2.0, 3.0] * 10)
    assert (small.test, small.drifted) == ("ks", False)
    rng = np.random.default_rng(2)
    large = numeric_drift("x", rng.normal(0, 1, 5000), rng.normal(0.5, 1, 5000))
    assert large.test == "wasserstein" and large.drifted and 0.4 < large.score < 0.6
    chi2 = categorical_drift("a", {"view": 60, "click": 40}, {"view": 20, "click": 80})
    assert chi2.test == "chi2" and chi2.drifted
    js = categorical_drift("a", {"view": 6000, "click": 4000}, {"view": 5900, "click": 4100})
    assert js.test == "jensen_shannon" and not js.drifted
    with pytest.raises(ValueError, match="empty"):
        categorical_drift("a", {}, {"view": 1})
