from __future__ import annotations

import numpy as np
import pytest

from tests.unit.training.helpers import events
from training.data.split import SplitConfig, TimeSplit, time_split
from training.evaluation.evaluate import evaluate, evaluate_seeds


def _split() -> TimeSplit:
    rows = [
        (0, "u1", "a"),
        (1, "u1", "b"),
        (2, "u2", "a"),
        (3, "u2", "c"),
        (4, "u3", "b"),
        (5, "u3", "c"),
        (6, "u3", "e"),
        (7, "u3", "f"),
        (8, "u1", "d"),
        (9, "u2", "d"),
        (10, "u1", "c"),  # test: u1 -> c (candidates left for u1: c, e, f)
        (10.5, "u2", "b"),  # test: u2 -> b (candidates left for u2: b, e, f)
        (11, "u9", "a"),  # test: new user -> a (all six candidates)
    ]
    # 13 events: the 77% quantile is event 10, so the first ten are training.
    return time_split(events(rows), SplitConfig(0.77, 0.0))


def _relevant_scorer(split: TimeSplit, sign: float):
    relevant_rows = split.test.relevant.toarray().astype(float)

    def score(users: np.ndarray) -> np.ndarray:
        return sign * relevant_rows[np.searchsorted(split.test.users, users)]

    return score


def test_oracle_scorer_is_perfect_and_masking_is_done_by_evaluate() -> None:
    split = _split()
    relevant = {
        int(u): split.test.relevant[r].toarray().ravel() for r, u in enumerate(split.test.users)
    }

    def oracle(users: np.ndarray) -> np.ndarray:
        # Training items get the highest score: evaluate must mask them.
        scores = split.train_matrix[users].toarray() * 10.0
        return scores + np.stack([relevant[int(u)] for u in users])

    result = evaluate(oracle, split, ks=(1, 2))
    assert result["n_users"] == 3
    assert result["ndcg@1"] == pytest.approx(1.0)
    assert result["recall@1"] == pytest.approx(1.0)
    assert result["slices"]["new"]["n_users"] == 1
    assert result["slices"]["new"]["ndcg@1"] == pytest.approx(1.0)


def test_anti_oracle_ranks_relevant_items_last() -> None:
    split = _split()
    result = evaluate(_relevant_scorer(split, -1.0), split, ks=(1, 3, 6))
    assert result["ndcg@1"] == 0.0
    # u1 and u2 have three unmasked candidates, so the relevant one is third.
    assert result["slices"]["light"]["recall@3"] == pytest.approx(1.0)
    assert result["slices"]["light"]["ndcg@3"] == pytest.approx(0.5)
    assert result["slices"]["new"]["recall@3"] == 0.0
    assert result["slices"]["new"]["recall@6"] == 1.0
    assert result["slices"]["heavy"]["n_users"] == 0
    # returning users are the light and heavy ones: u1 and u2, not the new u9
    assert result["slices"]["returning"]["n_users"] == 2
    assert result["slices"]["returning"]["ndcg@3"] == pytest.approx(0.5)
    assert result["slices"]["returning"]["recall@6"] == pytest.approx(1.0)


def test_constant_scores_fall_back_to_popularity_order() -> None:
    split = _split()
    assert split.item_ids.tolist() == ["a", "b", "c", "d", "e", "f"]
    result = evaluate(lambda users: np.zeros((len(users), split.n_items)), split, ks=(1,))
    # Ties go to the most popular unmasked item: u1 -> c, u2 -> b, u9 -> a, all relevant.
    assert result["ndcg@1"] == pytest.approx(1.0)
    assert result["coverage@1"] == pytest.approx(3 / 6)
    # a-d have 2 training users each (percentile (4.5 - 1) / 5), e and f one.
    assert result["popularity_bias@1"] == pytest.approx(0.7)


def test_scorer_with_wrong_shape_is_refused() -> None:
    split = _split()
    with pytest.raises(ValueError, match="shape"):
        evaluate(lambda users: np.zeros((len(users), 1)), split, ks=(1,))


def test_evaluate_seeds_gives_mean_and_sample_std() -> None:
    split = _split()

    def build(seed: int):
        # Seed 0 ranks the relevant item first for everyone, seed 1 last.
        return _relevant_scorer(split, 1.0 if seed == 0 else -1.0)

    out = evaluate_seeds(build, split, seeds=(0, 1), ks=(1,))
    values = [run["recall@1"] for run in out["runs"]]
    assert values[0] == pytest.approx(1.0)
    assert values[1] < 1.0
    assert out["mean"]["recall@1"] == pytest.approx(np.mean(values))
    assert out["std"]["recall@1"] == pytest.approx(np.std(values, ddof=1))
    assert out["mean"]["slices"]["new"]["recall@1"] == pytest.approx(
        np.mean([run["slices"]["new"]["recall@1"] for run in out["runs"]])
    )
