from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from analysis import headroom
from tests.unit.training.helpers import events
from training.evaluation import new_users
from training.evaluation.metrics import ranking_metrics
from training.report import required_mean


def _mean_ndcg(items: tuple[int, ...], relevant: np.ndarray) -> float:
    top = np.tile(np.asarray(items), (relevant.shape[0], 1))
    return float(ranking_metrics(top, relevant, (len(items),))[f"ndcg@{len(items)}"].mean())


@pytest.mark.parametrize("seed", range(5))
def test_the_best_uniform_list_beats_every_other_list(seed: int) -> None:
    rng = np.random.default_rng(seed)
    relevant = rng.random((15, 7)) < rng.uniform(0.1, 0.5, size=7)  # items differ in appeal
    relevant[np.arange(15), rng.integers(0, 7, 15)] = True  # every user has one
    k = 3

    items, bound = new_users.best_uniform_list(sp.csr_matrix(relevant), k)

    every = [_mean_ndcg(order, relevant) for order in itertools.permutations(range(7), k)]
    assert bound == pytest.approx(max(every))
    assert _mean_ndcg(tuple(items), relevant) == pytest.approx(bound)


def test_a_user_without_relevant_items_is_refused() -> None:
    with pytest.raises(ValueError, match="relevant"):
        new_users.best_uniform_list(sp.csr_matrix(np.array([[1, 0], [0, 0]])), 1)


def test_the_required_mean_brings_the_overall_mean_to_the_goal() -> None:
    must = required_mean(goal=0.4, n_all=10, bound_new=0.5, n_new=6)
    assert must is not None
    assert (6 * 0.5 + 4 * must) / 10 == pytest.approx(0.4)
    assert required_mean(goal=0.4, n_all=6, bound_new=0.5, n_new=6) is None


def _log_with_new_users() -> list[tuple[float, str, str]]:
    """Ten training users over items a..f; in the test period they and five new users act."""
    rows: list[tuple[float, str, str]] = []
    for user in range(10):
        for n, item in enumerate("abcdef"[: 3 + user % 4]):
            rows.append((user * 0.5 + n * 0.1, f"u{user}", item))
        rows.append((user * 0.5 + 0.05, f"u{user}", f"x{user}"))  # 16 candidates in all
    for user in range(10):  # validation: each old user takes one more item
        rows.append((20 + user * 0.01, f"u{user}", "abcdef"[(user + 3) % 6]))
    for user in range(10):  # test: old users take e or f, when not already theirs
        rows.append((30 + user * 0.01, f"u{user}", "ef"[user % 2]))
    for user in range(5):  # new users, test only: items nobody trended on before
        rows.append((31 + user * 0.01, f"n{user}", "f"))
        rows.append((31.5 + user * 0.01, f"n{user}", "e" if user < 3 else "d"))
    return rows


def test_the_report_bounds_new_users_and_derives_what_returning_users_need(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log_dir = tmp_path / "data" / "datasets" / "tiny"
    log_dir.mkdir(parents=True)
    events(_log_with_new_users()).to_parquet(log_dir / "events.parquet")
    monkeypatch.setenv("STREAMREC_DATA_DIR", str(tmp_path / "data"))
    printed: list[str] = []
    output = tmp_path / "headroom.json"

    code = headroom.main(
        ["--source", "tiny", "--train-fraction", "0.6", "--validation-fraction", "0.2",
         "--output", str(output)],
        out=printed.append,
    )  # fmt: skip

    assert code == 0
    report = json.loads(output.read_text())
    assert report["n_new"] == 5 and report["n_users"] == report["n_new"] + report["n_returning"]
    new = report["new_users"]
    assert new["best_list"][:2] == ["f", "e"]  # all five new users took f; three took e
    assert new["bound"] >= new["recent popularity 14d"]  # no list beats the bound
    for row in report["targets"]:
        overall = (
            new["bound"] * report["n_new"]
            + row["returning_users_must_reach"] * report["n_returning"]
        ) / report["n_users"]
        assert overall == pytest.approx(row["goal"])
    returning = report["returning"]
    assert returning["test-period popularity (sees the test labels)"] >= max(
        returning["popularity (all training)"], returning["recent popularity 14d"]
    )
    assert "returning users must reach" in printed[0]
