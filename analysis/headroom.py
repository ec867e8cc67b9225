"""``python -m analysis.headroom``: how far issue 3's NDCG@10 targets can be reached at all.

In the static protocol (:mod:`training.data.split`) a user without training history ("new")
looks the same at the cutoff as every other new user (no training items to mask, no
features, no embedding; only an arbitrary id): every scorer that reads what is known
then, learned or not, gives all new users one and the same list. The best such list is
known exactly. With binary gains the mean NDCG@k of one list ``L`` over users ``u`` is
``sum_p disc(p) * w(L[p])`` where ``w(i) = mean_u rel_u(i) / IDCG_u``; discounts fall
with the position, so the sum is largest with the items sorted by ``w`` (the
rearrangement inequality). That list is built from the test labels, so no method can
score higher on the new users.

A target on all users (``goal`` = the mean over every evaluated user) then fixes what the
users with history ("returning") must reach on average, even with that perfect list for
the new users: ``(goal * n_all - bound_new * n_new) / n_returning``. This module prints
that figure beside reference points for returning users:

- recent popularity (14 days) and all-time popularity, the issue's baselines;
- the test period's own popularity (a list built from the test labels, so it sees the
  future): what a perfect popularity model would reach;
- EASE (Steck 2019, a closed-form item-item model that is hard to beat on MovieLens),
  alone and blended with recent or with test-period popularity, at the weight that is
  best on the test labels themselves: optimistic on purpose.

Nothing here trains or tunes the cascade; it reads the prepared log only.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.report_baselines import source_events, split_arguments, write_report
from training.data.split import SplitConfig, TimeSplit, restrict_target
from training.data.split import time_split as make_split
from training.evaluation.baselines import broadcast, popularity_scores, recent_popularity_scores
from training.evaluation.evaluate import Scorer, evaluate
from training.evaluation.metrics import RETURNING
from training.evaluation.new_users import K, new_user_bound
from training.report import (
    CASCADE_OVER_BEST_BASELINE,
    LIGHTGCN_OVER_POPULARITY,
    POPULARITY,
    required_mean,
)

RECENT_DAYS = (1, 3, 7, 14)
EASE_L2 = (50.0, 200.0, 500.0)
BLEND_WEIGHTS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


def ease_scores(split: TimeSplit, l2: float) -> np.ndarray:
    """(n_users, n_items) EASE scores from the training matrix (dense; fine at 10^3 items)."""
    x = split.train_matrix.toarray().astype(np.float64)
    gram = x.T @ x + l2 * np.eye(x.shape[1])
    inverse = np.linalg.inv(gram)
    weights = -inverse / np.diag(inverse)
    np.fill_diagonal(weights, 0.0)
    return x @ weights


def _standardized_rows(scores: np.ndarray) -> np.ndarray:
    centred = scores - scores.mean(axis=1, keepdims=True)
    spread = centred.std(axis=1, keepdims=True)
    return centred / np.where(spread > 0, spread, 1.0)


def _matrix_scorer(scores: np.ndarray) -> Scorer:
    return lambda users: scores[users]


def _ndcg(scorer: Scorer, split: TimeSplit) -> float:
    value = evaluate(scorer, split, ks=(K,))[f"ndcg@{K}"]
    return float(value) if value is not None else float("nan")


def future_popularity(split: TimeSplit) -> np.ndarray:
    """(n_items,) test-period users per candidate: a popularity list that sees the future."""
    return np.asarray(split.test.relevant.sum(axis=0)).ravel().astype(np.float64)


def returning_references(split: TimeSplit, returning: TimeSplit) -> dict[str, float]:
    """NDCG@10 on returning users of the baselines and of the optimistic references."""
    recent = np.log1p(recent_popularity_scores(split, 14))
    future = np.log1p(future_popularity(split))
    references = {
        POPULARITY: _ndcg(broadcast(popularity_scores(split)), returning),
        "recent popularity 14d": _ndcg(broadcast(recent), returning),
        "test-period popularity (sees the test labels)": _ndcg(broadcast(future), returning),
    }
    blends: dict[str, float] = {}
    for l2 in EASE_L2:
        ease = _standardized_rows(ease_scores(split, l2))
        blends[f"EASE (l2={l2:g})"] = _ndcg(_matrix_scorer(ease), returning)
        for label, popular in (("recent popularity 14d", recent), ("test popularity", future)):
            popular_z = _standardized_rows(popular[None, :])  # (1, n_items)
            for weight in BLEND_WEIGHTS:
                blended = ease + weight * popular_z
                blends[f"EASE (l2={l2:g}) + {weight:g} x {label}"] = _ndcg(
                    _matrix_scorer(blended), returning
                )
    best_alone = max((k for k in blends if "+" not in k), key=blends.__getitem__)
    best_recent = max((k for k in blends if "recent" in k), key=blends.__getitem__)
    best_future = max((k for k in blends if "test popularity" in k), key=blends.__getitem__)
    for name in (best_alone, best_recent, best_future):
        references[f"{name}, best on the test labels"] = blends[name]
    return references


def headroom(events: pd.DataFrame, config: SplitConfig) -> dict[str, Any]:
    split = make_split(events, config)
    test = split.test
    is_new = test.users >= split.n_train_users
    new = new_user_bound(split)
    n_all, n_new, bound_new = new["n_users"], new["n_new"], new["bound"]
    baselines: dict[str, float] = {POPULARITY: _ndcg(broadcast(popularity_scores(split)), split)}
    for days in RECENT_DAYS:
        baselines[f"recent popularity {days}d"] = _ndcg(
            broadcast(recent_popularity_scores(split, days)), split
        )
    best_name = max(baselines, key=baselines.__getitem__)
    popularity = baselines[POPULARITY]
    goals = {
        f"cascade >= {CASCADE_OVER_BEST_BASELINE:.2f} x {best_name}": (
            CASCADE_OVER_BEST_BASELINE * baselines[best_name]
        ),
        f"LightGCN >= {LIGHTGCN_OVER_POPULARITY:.2f} x {POPULARITY}": (
            LIGHTGCN_OVER_POPULARITY * popularity
        ),
    }
    returning = replace(split, test=restrict_target(test, ~is_new))
    return {
        "split_config": asdict(config),
        "k": K,
        "n_users": n_all,
        "n_new": n_new,
        "n_returning": n_all - n_new,
        "baselines": baselines,
        "new_users": {
            "bound": bound_new,
            "best_list": new["best_list"],
            "recent popularity 14d": _ndcg(
                broadcast(recent_popularity_scores(split, 14)),
                replace(split, test=restrict_target(test, is_new)),
            )
            if n_new
            else None,
        },
        "targets": [
            {
                "target": name,
                "goal": goal,
                "returning_users_must_reach": required_mean(goal, n_all, bound_new, n_new),
            }
            for name, goal in goals.items()
        ],
        RETURNING: returning_references(split, returning),
    }


def markdown(report: dict[str, Any]) -> str:
    new = report["new_users"]
    lines = [
        f"## Headroom of the NDCG@{report['k']} targets (test period)",
        "",
        f"{report['n_users']} test users: {report['n_new']} new, "
        f"{report['n_returning']} returning. Every scorer gives all new users one list; the "
        f"best possible list, built from the test labels, reaches **{new['bound']:.4f}** on "
        f"them (recent popularity 14d: {new['recent popularity 14d'] or 0:.4f}).",
        "",
        "| target | goal (all users) | returning users must reach |",
        "|---|---|---|",
    ]
    for row in report["targets"]:
        must = row["returning_users_must_reach"]
        lines.append(
            f"| {row['target']} | {row['goal']:.4f} | {'–' if must is None else f'{must:.4f}'} |"
        )
    lines += ["", "| returning users | NDCG@10 |", "|---|---|"]
    for name, value in report[RETURNING].items():
        lines.append(f"| {name} | {value:.4f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, out: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.headroom")
    split_arguments(parser)
    parser.add_argument("--output", type=Path, default=Path("reports/headroom.json"))
    args = parser.parse_args(argv)
    events = source_events(parser, args)
    report = headroom(events, SplitConfig(args.train_fraction, args.validation_fraction))
    write_report(report, markdown(report), args.output, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
