"""The API check scores whatever answers /recommend on the protocol's test target."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.api_check import ApiCheckError, check, split_at
from training.evaluation.baselines import popularity_scores

DAY = 86_400_000


def _events() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    rows = [
        (int(day * DAY + rng.integers(DAY)), f"u{user}", f"i{rng.zipf(1.5) % 30}")
        for day in range(40)
        for user in rng.choice(25, size=6, replace=False)
    ]
    return pd.DataFrame(rows, columns=["event_time", "user_id", "item_id"])


def test_split_at_puts_exactly_the_events_before_t_in_training() -> None:
    events = _events()
    until = 30 * DAY + 1
    split = split_at(events, until)
    assert split.train_end_ms >= until
    assert len(split.train_time) == int((events["event_time"] < until).sum())
    with pytest.raises(ApiCheckError, match="nothing to score"):
        split_at(events, int(events["event_time"].max()) + 1)
    with pytest.raises(ApiCheckError, match="no event before"):
        split_at(events, 0)


def test_an_oracle_scores_one_and_a_popularity_answer_matches_its_baseline() -> None:
    events = _events()
    until = 30 * DAY
    split = split_at(events, until)
    later = events[events["event_time"] >= until]

    def oracle(user_id: str, k: int) -> tuple[list[str], str]:
        seen = set(events[(events["event_time"] < until) & (events["user_id"] == user_id)].item_id)
        items = [i for i in later[later["user_id"] == user_id].item_id.unique() if i not in seen]
        return [i for i in items if i in split.item_index][:k], "oracle"

    perfect = check(events, until, oracle)
    assert perfect["metrics"]["api"]["ndcg@10"] == pytest.approx(1.0)
    assert perfect["model_versions"] == {"oracle": perfect["users"]}
    assert perfect["users"] == len(split.test.users) > 0

    order = np.argsort(-popularity_scores(split), kind="stable")
    popular = [str(split.item_ids[i]) for i in order]

    def most_popular(user_id: str, k: int) -> tuple[list[str], str]:
        seen = set(events[(events["event_time"] < until) & (events["user_id"] == user_id)].item_id)
        return [i for i in popular if i not in seen][:k], "pop"

    same = check(events, until, most_popular)
    assert same["metrics"]["api"] == pytest.approx(same["metrics"]["popularity (before T)"])
    assert same["already_seen_answers"] == 0

    def unmasked(user_id: str, k: int) -> tuple[list[str], str]:
        return popular[:k], "pop"

    careless = check(events, until, unmasked)
    assert careless["already_seen_answers"] > 0
    assert careless["metrics"]["api"]["ndcg@10"] < same["metrics"]["api"]["ndcg@10"]


def test_unknown_items_and_short_lists_are_misses() -> None:
    events = _events()
    until = 30 * DAY

    def nonsense(user_id: str, k: int) -> tuple[list[str], str]:
        return ["no-such-item", "another"], "broken"

    result = check(events, until, nonsense, max_users=5)
    assert result["users"] == 5
    assert result["short_lists"] == 5
    assert result["metrics"]["api"]["ndcg@10"] == 0.0
    assert result["ratio_to_best"] == 0.0
