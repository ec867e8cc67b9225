"""Streaming evaluation on a planted pattern where only live features can know the answer."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from models.cascade import CascadeConfig, CascadeModels, recommend
from training.evaluation import streaming as streaming_eval
from training.evaluation.streaming import (
    ServingModels,
    StreamingConfig,
    eligible_events,
    streaming_evaluation,
)

HOUR = 3_600_000
N_PAIRS = 40
CUTOFF = 1_000 * HOUR


def _serving() -> ServingModels:
    """Items 2j and 2j+1 share one embedding, orthogonal to every other pair's: recall from
    the user's recent items puts the partner of the latest item first. No user rows, DIN or
    RankNet, so recall (and its recent items) alone decides."""
    embeddings = torch.zeros(2 * N_PAIRS, N_PAIRS)
    for pair in range(N_PAIRS):
        embeddings[2 * pair : 2 * pair + 2, pair] = 1.0
    return ServingModels(
        models=CascadeModels(item_embeddings=embeddings),
        config=CascadeConfig(n_candidates=50, rerank_depth=20),
        item_ids=[f"i{n}" for n in range(2 * N_PAIRS)],
        user_ids=[],
        n_trained_users=0,
    )


def _log(users: int = 30, seed: int = 0) -> pd.DataFrame:
    """Before the cutoff each user sees one pair (both items); after it, a new pair per
    user: first one item, an hour later its partner."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        before, after = rng.choice(N_PAIRS, size=2, replace=False)
        start = CUTOFF - 100 * HOUR + u * HOUR
        rows += [(f"u{u}", f"i{2 * before}", start), (f"u{u}", f"i{2 * before + 1}", start + 1)]
        later = CUTOFF + 10 * HOUR + u * 2 * HOUR
        rows += [(f"u{u}", f"i{2 * after}", later), (f"u{u}", f"i{2 * after + 1}", later + HOUR)]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "event_time"])
    frame["event_id"] = [f"e{n}" for n in range(len(frame))]
    frame["action"] = "view"
    return frame.sort_values("event_time", kind="stable", ignore_index=True)


def test_live_features_win_on_the_planted_pairs() -> None:
    events = _log()
    report = streaming_evaluation(
        _serving(), events, cutoff_ms=CUTOFF, start_ms=CUTOFF, with_events=True
    )
    assert report["n_events"] == report["n_eligible"] == 60  # two test events per user
    partners = [r for r in report["events"] if int(r["item_id"][1:]) % 2 == 1]
    # The partner of the item just seen is the live arm's first pick, every time.
    assert all(r["live_rank"] == 0 for r in partners)
    # The frozen arm only knows the pre-cutoff pair: the partner is a lucky tie at best.
    frozen_hits = np.mean([r["frozen_rank"] is not None for r in partners])
    assert frozen_hits < 0.5
    assert report["live"]["ndcg@10"] > report["frozen"]["ndcg@10"] + 0.3
    assert report["delta_ndcg@10"] > 0.3
    assert report["paired"]["wilcoxon_p"] < 0.01


def _requests(
    monkeypatch: pytest.MonkeyPatch, events: pd.DataFrame
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """What each arm handed the cascade, per scored event: (live, frozen) feature tuples."""
    seen: list[tuple[Any, ...]] = []

    def spy(models: Any, items: Any, request: Any, config: Any) -> Any:
        seen.append(
            (
                tuple(request.recent_items.tolist()),
                tuple(request.seen_items.tolist()),
                tuple(request.user_context.tolist()),
                tuple(items.popularity.tolist()),
                tuple(items.recency.tolist()),
            )
        )
        return recommend(models, items, request, config)

    monkeypatch.setattr(streaming_eval, "recommend", spy)
    streaming_evaluation(_serving(), events, cutoff_ms=CUTOFF, start_ms=CUTOFF)
    return seen[0::2], seen[1::2]  # live first, then frozen, for every event


def test_frozen_features_ignore_everything_after_the_cutoff(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Extra post-cutoff repeats (never scored) change every live request and no frozen one."""
    events = _log()
    extra = events[events["event_time"] < CUTOFF].copy()
    extra["event_time"] = extra["event_time"] + 105 * HOUR  # re-seen just before the test
    extra["event_id"] = "x" + extra["event_id"]
    noisy = pd.concat([events, extra]).sort_values("event_time", kind="stable", ignore_index=True)
    clean_live, clean_frozen = _requests(monkeypatch, events)
    noisy_live, noisy_frozen = _requests(monkeypatch, noisy)
    assert len(clean_frozen) == len(noisy_frozen) == 60
    assert clean_frozen == noisy_frozen
    # Every live request differs (popularity and recency moved; the user's recent items too).
    assert all(a != b for a, b in zip(clean_live, noisy_live, strict=True))
    # Within one run the frozen features of a user never change from event to event.
    assert len({request[3] for request in clean_frozen}) == 1


def test_sampling_is_bounded_and_deterministic() -> None:
    events = _log(users=30)
    config = StreamingConfig(max_events=10, seed=3)
    first = streaming_evaluation(
        _serving(), events, cutoff_ms=CUTOFF, start_ms=CUTOFF, config=config, with_events=True
    )
    second = streaming_evaluation(
        _serving(), events, cutoff_ms=CUTOFF, start_ms=CUTOFF, config=config, with_events=True
    )
    assert first["n_events"] == 10 and first["n_eligible"] == 60
    assert [r["event_id"] for r in first["events"]] == [r["event_id"] for r in second["events"]]


def test_only_first_interactions_with_vocabulary_items_are_eligible() -> None:
    frame = pd.DataFrame(
        {
            "event_id": ["a", "b", "c", "d", "e"],
            "event_time": [1, 5, 6, 7, 8],
            "user_id": ["u", "u", "u", "u", "v"],
            "item_id": ["i0", "i0", "i1", "zz", "i0"],
        }
    )
    # i0 for u at 5 is a repeat; zz is not in the vocabulary; 1 is before the start.
    assert list(eligible_events(frame, ["i0", "i1"], start_ms=2)) == [2, 4]


def test_start_before_the_cutoff_is_refused() -> None:
    with pytest.raises(ValueError, match="before the training cutoff"):
        streaming_evaluation(_serving(), _log(), cutoff_ms=CUTOFF, start_ms=CUTOFF - 1)
