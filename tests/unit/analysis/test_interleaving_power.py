"""Issue 16 §3, the statistical half: team-draft interleaving reaches the A/B verdict with
fewer users, measured over many simulated experiments of the same click model the
end-to-end test sends through the API (``analysis.simulator.Preferences``), scored by the
experiment table's own tests (``api.experiments.stats``). Services are not needed to count
users; the end-to-end test proves the same verdicts on the real stack."""

from __future__ import annotations

import random
import statistics

from analysis.simulator import Preferences
from api.experiments.definitions import team_draft
from api.experiments.stats import Rate, sign_test_p, two_proportion_p

ITEMS = [f"i{n}" for n in range(150)]
K = 10
STEP = 10
MAX_USERS = 2000
RUNS = 30


def _preferences() -> Preferences:
    counts = {item: len(ITEMS) - n for n, item in enumerate(ITEMS)}  # i0 the most popular
    return Preferences.from_popularity(counts, liked=0.9, other=0.05, activity=(0.2, 2.0, 8.0))


def _clicks(prefs: Preferences, user: str, items: list[str], rng: random.Random) -> list[int]:
    """Ranks (0-based) the user clicks in ``items``."""
    return [
        rank
        for rank, item in enumerate(items)
        if rng.random() < prefs.click_probability(user, item, rank + 1)
    ]


def _users_needed(mode: str, run: int, prefs: Preferences) -> int:
    rng = random.Random(f"{mode}:{run}")
    popular = ITEMS[:K]
    ab = {"popular": [0, 0], "random": [0, 0]}  # lists with a click, lists
    wins = [0, 0]
    for n in range(1, MAX_USERS + 1):
        user = f"{run}-{n}"
        chosen = rng.sample(ITEMS, K)
        if mode == "ab":
            arm = "popular" if rng.random() < 0.5 else "random"
            items = popular if arm == "popular" else chosen
            ab[arm][0] += bool(_clicks(prefs, user, items, rng))
            ab[arm][1] += 1
        else:
            merged = team_draft(popular, chosen, K, rng)
            clicked = _clicks(prefs, user, [item for item, _ in merged], rng)
            per_team = [sum(1 for r in clicked if merged[r][1] == t) for t in (0, 1)]
            if per_team[0] != per_team[1]:
                wins[0 if per_team[0] > per_team[1] else 1] += 1
        if n % STEP:
            continue
        if mode == "ab":
            p = two_proportion_p(Rate(*ab["popular"]), Rate(*ab["random"]))
            leader_ok = ab["popular"][0] * ab["random"][1] > ab["random"][0] * ab["popular"][1]
        else:
            p = sign_test_p(wins[0], wins[1])
            leader_ok = wins[0] > wins[1]
        if p is not None and p < 0.05 and leader_ok:
            return n
    return MAX_USERS


def test_interleaving_needs_fewer_users_than_a_b_for_the_same_verdict() -> None:
    prefs = _preferences()
    ab = [_users_needed("ab", run, prefs) for run in range(RUNS)]
    interleave = [_users_needed("interleave", run, prefs) for run in range(RUNS)]
    print(
        f"users to p < 0.05 over {RUNS} runs: A/B median {statistics.median(ab)}, "
        f"interleaving median {statistics.median(interleave)}"
    )
    assert max(ab) < MAX_USERS and max(interleave) < MAX_USERS  # both reach the verdict
    assert statistics.mean(interleave) < statistics.mean(ab)
    assert statistics.median(interleave) < statistics.median(ab)
