"""Assignment, validation, team-draft interleaving and exploration: pure functions."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from pydantic import ValidationError

from api.experiments.definitions import (
    ExperimentSpec,
    assign,
    enrolled,
    explore,
    governing,
    team_draft,
)


def ab(
    name: str = "exp", shares: tuple[float, float] = (0.5, 0.5), **extra: object
) -> ExperimentSpec:
    return ExperimentSpec.model_validate(
        {
            "name": name,
            "mode": "ab",
            "variants": [
                {"name": "control", "strategy": "champion", "share": shares[0]},
                {"name": "treatment", "strategy": "popularity", "share": shares[1]},
            ],
            **extra,
        }
    )


def test_assignment_is_sticky_and_follows_the_shares() -> None:
    spec = ab(shares=(0.2, 0.8))
    users = [f"user-{i}" for i in range(20_000)]
    first = [assign(spec, u).name for u in users]
    # the same in a rebuilt spec (another process): a hash, not a random draw
    assert first == [assign(ab(shares=(0.2, 0.8)), u).name for u in users]
    share = Counter(first)["control"] / len(users)
    assert 0.19 < share < 0.21


def test_assignment_is_independent_between_experiments() -> None:
    one, two = ab("one"), ab("two")
    users = [f"user-{i}" for i in range(20_000)]
    both = Counter((assign(one, u).name, assign(two, u).name) for u in users)
    for cell in both.values():  # each of the four cells near a quarter
        assert 0.23 < cell / len(users) < 0.27


def test_traffic_enrolls_a_share_and_the_oldest_experiment_governs() -> None:
    old = ab("old", traffic=0.3, created_ms=1)
    new = ab("new", created_ms=2)
    users = [f"user-{i}" for i in range(10_000)]
    assert 0.28 < sum(enrolled(old, u) for u in users) / len(users) < 0.32
    for user in users[:500]:
        chosen = governing([new, old], user)
        assert chosen is not None
        assert chosen.name == ("old" if enrolled(old, user) else "new")


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "variants": [{"name": "a", "strategy": "champion", "share": 1.0}]},
        {
            "name": "x",
            "variants": [
                {"name": "a", "strategy": "champion", "share": 0.5},
                {"name": "b", "strategy": "popularity", "share": 0.6},
            ],
        },
        {
            "name": "x",
            "variants": [
                {"name": "a", "strategy": "champion", "share": 0.5},
                {"name": "a", "strategy": "popularity", "share": 0.5},
            ],
        },
        {
            "name": "x",
            "variants": [
                {"name": "a", "strategy": "nonsense", "share": 0.5},
                {"name": "b", "strategy": "popularity", "share": 0.5},
            ],
        },
        {
            "name": "Bad Name!",
            "variants": [
                {"name": "a", "strategy": "champion", "share": 0.5},
                {"name": "b", "strategy": "popularity", "share": 0.5},
            ],
        },
        {
            "name": "x",
            "mode": "interleave",
            "variants": [
                {"name": "a", "strategy": "champion", "share": 0.3},
                {"name": "b", "strategy": "popularity", "share": 0.3},
                {"name": "c", "strategy": "random", "share": 0.4},
            ],
        },
    ],
)
def test_invalid_definitions_are_refused(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ExperimentSpec.model_validate(body)


def test_team_draft_takes_each_lists_best_in_turn_without_repeats() -> None:
    a, b = ["1", "2", "3", "4"], ["3", "5", "1", "6"]
    for seed in range(50):
        merged = team_draft(a, b, 6, random.Random(seed))
        items = [item for item, _ in merged]
        assert len(items) == len(set(items)) == 6
        picks = Counter(team for _, team in merged)
        assert abs(picks[0] - picks[1]) <= 1
        # each team's picks are in its own list's order
        for team, source in ((0, a), (1, b)):
            own = [item for item, t in merged if t == team]
            assert own == sorted(own, key=source.index)
    # the first pick is either list's top item, each about half the time
    firsts = Counter(team_draft(a, b, 1, random.Random(s))[0] for s in range(400))
    assert set(firsts) == {("1", 0), ("3", 1)}
    assert 150 < firsts[("1", 0)] < 250


def test_team_draft_runs_out_gracefully() -> None:
    assert team_draft(["a"], [], 5, random.Random(1)) == [("a", 0)]
    assert team_draft([], [], 5, random.Random(1)) == []


def test_exploration_logs_the_probability_of_each_slot() -> None:
    ranked = ["a", "b", "c"]
    pool = ["a", "b", "c", "d", "e", "f"]
    epsilon = 0.2
    trials = 20_000
    first_slot: Counter[str] = Counter()
    logged: dict[str, float] = {}
    rng = random.Random(3)
    for _ in range(trials):
        item, propensity = explore(ranked, pool, 3, epsilon, rng)[0]
        first_slot[item] += 1
        logged[item] = propensity
    # the logged propensity is the frequency with which the item took the first slot
    for item, propensity in logged.items():
        assert abs(first_slot[item] / trials - propensity) < 0.01, item
    assert logged["a"] == pytest.approx(0.8 + 0.2 / 6)
    assert explore(ranked, pool, 3, 0.0, rng) == [("a", 1.0), ("b", 1.0), ("c", 1.0)]
