"""The experiment table: per variant CTR with its interval, and the test of the experiment.

A/B: each served list is one trial and a list with an attributed click a success; CTR
intervals are Wilson score intervals and the test is the two-proportion z-test of the
first variant (the control) against each other one, computed as scipy's chi-squared test
of homogeneity on the 2×2 table without continuity correction (the same test: χ² = z²).
Interleaving: each request with clicks is a vote for the team with more clicks; the sign
test (a two-sided binomial test at one half, scipy) over the non-tied votes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scipy import stats

from api.experiments.definitions import ExperimentSpec
from streamrec.infra.experiments import TIE, Counts

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Rate:
    successes: int
    trials: int

    @property
    def value(self) -> float | None:
        return self.successes / self.trials if self.trials else None

    def interval(self) -> tuple[float, float] | None:
        if not self.trials:
            return None
        ci = stats.binomtest(self.successes, self.trials).proportion_ci(
            confidence_level=CONFIDENCE, method="wilson"
        )
        return (float(ci.low), float(ci.high))


def two_proportion_p(a: Rate, b: Rate) -> float | None:
    """Two-sided p-value of equal rates; None when a variant has no trials or no spread."""
    if not a.trials or not b.trials:
        return None
    table = [
        [a.successes, a.trials - a.successes],
        [b.successes, b.trials - b.successes],
    ]
    if sum(row[0] for row in table) == 0 or sum(row[1] for row in table) == 0:
        return None  # nobody clicked, or everybody did: no evidence either way
    result = stats.chi2_contingency(table, correction=False)
    return float(result.pvalue)


def sign_test_p(wins_a: int, wins_b: int) -> float | None:
    if wins_a + wins_b == 0:
        return None
    return float(stats.binomtest(wins_a, wins_a + wins_b, 0.5).pvalue)


def experiment_table(spec: ExperimentSpec, counts: Counts) -> dict[str, Any]:
    """What ``GET /admin/experiments/{name}`` returns."""
    rows: list[dict[str, Any]] = []
    for variant in spec.variants:
        c = counts.get(variant.name, {})
        if spec.mode == "ab":
            rate = Rate(c.get("clicks", 0), c.get("impressions", 0))
        else:
            rate = Rate(c.get("item_clicks", 0), c.get("item_impressions", 0))
        interval = rate.interval()
        rows.append(
            {
                "name": variant.name,
                "strategy": variant.strategy,
                "share": variant.share,
                "impressions": rate.trials,
                "clicks": rate.successes,
                "ctr": rate.value,
                "ctr_ci": list(interval) if interval else None,
                "item_impressions": c.get("item_impressions", 0),
                "item_clicks": c.get("item_clicks", 0),
                "conversions": c.get("conversions", 0),
                **({"wins": c.get("wins", 0)} if spec.mode == "interleave" else {}),
            }
        )
    table: dict[str, Any] = {
        **spec.model_dump(),
        "variants": rows,
        # lists served and clicks attributed in all, whatever their variant
        "lists": sum(c.get("impressions", 0) for c in counts.values()),
        "item_clicks": sum(c.get("item_clicks", 0) for c in counts.values()),
    }
    if spec.mode == "ab":
        control = rows[0]
        for row in rows[1:]:
            row["p_value"] = two_proportion_p(
                Rate(control["clicks"], control["impressions"]),
                Rate(row["clicks"], row["impressions"]),
            )
        rows[0]["p_value"] = None
        p_values = [row["p_value"] for row in rows[1:] if row["p_value"] is not None]
        table["test"] = "two-proportion z-test against the first variant"
        table["p_value"] = min(p_values) if p_values else None
        best = max(rows, key=lambda row: row["ctr"] if row["ctr"] is not None else -1.0)
    else:
        wins = [rows[0]["wins"], rows[1]["wins"]]
        table["ties"] = counts.get(TIE, {}).get("wins", 0)
        table["test"] = "sign test over requests with clicks (team-draft interleaving)"
        table["p_value"] = sign_test_p(wins[0], wins[1])
        best = rows[0] if wins[0] >= wins[1] else rows[1]
    significant = table["p_value"] is not None and table["p_value"] < 1 - CONFIDENCE
    table["leader"] = best["name"] if significant else None
    return table
