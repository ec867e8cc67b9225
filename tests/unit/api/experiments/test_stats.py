"""The experiment table's statistics against values worked out independently."""

from __future__ import annotations

import math

import pytest

from api.experiments.definitions import ExperimentSpec
from api.experiments.stats import Rate, experiment_table, sign_test_p, two_proportion_p


def test_two_proportion_p_is_the_z_test() -> None:
    a, b = Rate(120, 1000), Rate(90, 1000)
    pooled = (120 + 90) / 2000
    z = (0.12 - 0.09) / math.sqrt(pooled * (1 - pooled) * (2 / 1000))
    expected = math.erfc(abs(z) / math.sqrt(2))
    assert two_proportion_p(a, b) == pytest.approx(expected, rel=1e-9)
    assert two_proportion_p(Rate(0, 10), Rate(0, 10)) is None
    assert two_proportion_p(Rate(1, 10), Rate(0, 0)) is None


def test_wilson_interval_and_sign_test() -> None:
    low, high = Rate(50, 100).interval() or (0, 0)
    assert low == pytest.approx(0.4038, abs=1e-4) and high == pytest.approx(0.5962, abs=1e-4)
    assert sign_test_p(10, 0) == pytest.approx(2 * 0.5**10)
    assert sign_test_p(0, 0) is None


def test_the_table_names_the_leader_only_when_significant() -> None:
    spec = ExperimentSpec.model_validate(
        {
            "name": "e",
            "variants": [
                {"name": "a", "strategy": "champion", "share": 0.5},
                {"name": "b", "strategy": "random", "share": 0.5},
            ],
        }
    )
    table = experiment_table(
        spec, {"a": {"impressions": 1000, "clicks": 200}, "b": {"impressions": 1000, "clicks": 100}}
    )
    assert table["leader"] == "a" and table["p_value"] < 1e-6
    assert [row["ctr"] for row in table["variants"]] == [0.2, 0.1]
    close = experiment_table(
        spec, {"a": {"impressions": 100, "clicks": 11}, "b": {"impressions": 100, "clicks": 10}}
    )
    assert close["leader"] is None and close["p_value"] > 0.5
    empty = experiment_table(spec, {})
    assert empty["p_value"] is None and empty["variants"][0]["ctr"] is None


def test_interleaving_table_uses_the_wins() -> None:
    spec = ExperimentSpec.model_validate(
        {
            "name": "i",
            "mode": "interleave",
            "variants": [
                {"name": "a", "strategy": "champion", "share": 0.5},
                {"name": "b", "strategy": "random", "share": 0.5},
            ],
        }
    )
    table = experiment_table(spec, {"a": {"wins": 30}, "b": {"wins": 10}, "=": {"wins": 4}})
    assert table["leader"] == "a" and table["ties"] == 4
    assert table["p_value"] == pytest.approx(sign_test_p(30, 10))
