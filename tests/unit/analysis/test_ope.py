"""OPE on simulated logs where the candidate's true value is known: the intervals cover it."""

from __future__ import annotations

import random

from analysis.ope import LoggedList, RewardModel, estimate, static_candidate
from analysis.simulator import Preferences
from api.experiments.definitions import explore

K = 5


def simulated_log(lists: int, epsilon: float, seed: int) -> tuple[list[LoggedList], Preferences]:
    rng = random.Random(seed)
    pool = [f"i{n}" for n in range(20)]
    preferences = Preferences(frozenset(pool[5:10]), liked=0.5, other=0.05)
    logging_policy = pool[:K]  # mostly items the users do not like
    logged = []
    for user in range(lists):
        served = explore(logging_policy, pool, K, epsilon, rng)
        clicked = {
            item
            for rank, (item, _) in enumerate(served, start=1)
            if rng.random() < preferences.examine(rank) * preferences.attractiveness(item)
        }
        logged.append(
            LoggedList(
                f"u{user}",
                tuple(item for item, _ in served),
                tuple(p for _, p in served),
                frozenset(clicked),
            )
        )
    return logged, preferences


def test_ips_and_snips_intervals_cover_the_true_value() -> None:
    logged, preferences = simulated_log(20_000, epsilon=0.3, seed=1)
    candidate = ["i5", "i6", "i0", "i7", "i1"]  # a better ranking than the one logged
    truth = preferences.expected_clicks(candidate)
    logged_value = sum(len(s.clicked) for s in logged) / len(logged)
    result = estimate(logged, static_candidate(candidate), K, resamples=499)
    print(f"truth {truth:.4f} logged {logged_value:.4f} {result}")
    for est in (result.ips, result.snips, result.dr):
        assert est.low <= truth <= est.high, (truth, est)
        assert est.high - est.low < 0.5 * truth  # informative, not a vacuous interval
    # the logging policy's own value is far from the candidate's: the estimate moved
    assert result.ips.low > logged_value


def test_without_exploration_only_the_logged_ranking_is_evaluated() -> None:
    logged, preferences = simulated_log(5_000, epsilon=0.0, seed=2)
    own = estimate(logged, static_candidate([f"i{n}" for n in range(K)]), K, resamples=199)
    truth = preferences.expected_clicks([f"i{n}" for n in range(K)])
    assert own.ips.low <= truth <= own.ips.high
    other = estimate(logged, static_candidate(["i9", "i8", "i7", "i6", "i5"]), K, resamples=199)
    assert other.matched_slots == 0 and other.ips.value == 0.0


def test_doubly_robust_covers_the_truth_with_a_narrower_interval_than_ips() -> None:
    """Fewer lists, a rarer exploration: where IPS's interval is wide, the reward model's
    prediction carries the slots the log rarely matched."""
    logged, preferences = simulated_log(4_000, epsilon=0.2, seed=3)
    candidate = ["i5", "i6", "i7", "i8", "i9"]  # the liked items only: far from the log
    truth = preferences.expected_clicks(candidate)
    result = estimate(logged, static_candidate(candidate), K, resamples=499)
    print(f"truth {truth:.4f} {result}")
    assert result.dr.low <= truth <= result.dr.high, (truth, result.dr)
    assert result.dr.high - result.dr.low < result.ips.high - result.ips.low, result


def test_doubly_robust_is_unbiased_when_the_reward_model_is_wrong() -> None:
    """The correction term removes the model's error: over many small logs, DR's mean
    stays at the truth although every prediction is shrunk toward the slot's rate."""
    candidate = ["i5", "i0", "i6", "i1", "i7"]
    values = []
    for seed in range(40):
        logged, preferences = simulated_log(1_000, epsilon=0.5, seed=100 + seed)
        values.append(estimate(logged, static_candidate(candidate), K, resamples=9).dr.value)
    truth = preferences.expected_clicks(candidate)
    mean, spread = sum(values) / len(values), max(values) - min(values)
    assert abs(mean - truth) < 0.05 * truth, (mean, truth, spread)
    # and the model alone is biased here: an unseen (item, slot) gets its slot's rate
    model = RewardModel.fit(logged, K)
    assert abs(model.predict("unseen", 0) - model.slot_rate[0]) < 1e-12
