from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest

from analysis import sequential_headroom as study
from analysis.sequential_arms import ContextRecorder, SequentialArm
from models.sasrec import Sasrec, SasrecConfig
from serving.knn import KnnParams
from training.data.split import time_split
from training.evaluation.prequential import Arms, PrequentialConfig, replay

N_ITEMS = 30
STEPS = 15


def _chain_log(users: int = 60, noise: float = 0.1, seed: int = 0) -> pd.DataFrame:
    """Each user walks items i, i+1, i+2, ... (mod 30) from a random start, one step per
    second for all users alike, with a random item instead of the next one 10 % of the
    time: the next item is planted by the sequence, not by popularity."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(users):
        item = int(rng.integers(N_ITEMS))
        for step in range(STEPS):
            if step and rng.random() < noise:
                item = int(rng.integers(N_ITEMS))
            elif step:
                item = (item + 1) % N_ITEMS
            rows.append(
                {
                    "event_id": f"e{user}-{step}",
                    "event_time": 1_000_000 + step * 1000 + user,
                    "user_id": f"u{user}",
                    "item_id": f"i{item}",
                    "action": "view",
                }
            )
    return pd.DataFrame(rows)


def _small(epochs: int = 25) -> SasrecConfig:
    return SasrecConfig(
        hidden=16, blocks=1, dropout=0.1, lr=2e-2, batch_size=64, max_epochs=epochs, patience=epochs
    )


def test_sasrec_learns_a_planted_sequence_and_beats_random() -> None:
    events = _chain_log()
    config = PrequentialConfig(max_events=None, seed=0)

    report = study.sequential_headroom(
        events, config, sasrec_configs=[_small()], blend_weights=(1.0,)
    )

    arms = report["all"]["arms"]
    sasrec = arms[f"{study.SASREC} live"]["ndcg@10"]
    # a random list of 10 of the ~19 unseen items holds the next item about half the time
    # with a mean NDCG@10 near 0.2; the planted successor is found far more often
    assert sasrec > 0.6
    assert arms[f"{study.SASREC} live"]["hit@10"] > 0.8
    assert report["all"]["n_events"] > 50
    oracle = arms[f"{study.ORACLE} live"]["ndcg@10"]
    assert oracle >= max(sasrec, arms[f"{study.KNN} live"]["ndcg@10"])
    assert report["all"]["paired"][f"{study.SASREC} live"]["n"] == report["all"]["n_events"]
    assert "SASRec" in study.markdown(report)


class _Spy(Sasrec):
    """SASRec that remembers every history it is asked to score."""

    def __init__(self, n_items: int) -> None:
        super().__init__(n_items, _small())
        self.fed: list[tuple[int, ...]] = []

    def next_scores(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        self.fed.extend(tuple(h) for h in histories)
        return super().next_scores(histories)


def _strictly_before(events: pd.DataFrame, item_index: dict[str, int]) -> list[tuple[int, ...]]:
    """Per event in time order: the user's vocabulary items with an earlier event time,
    oldest first (the last 50)."""
    ordered = events.sort_values("event_time", kind="stable")
    out = []
    for row in ordered.itertuples(index=False):
        earlier = ordered[
            (ordered["user_id"] == row.user_id) & (ordered["event_time"] < row.event_time)
        ]
        out.append(tuple(item_index[i] for i in earlier["item_id"])[-50:])
    return out


def test_the_sequence_fed_at_each_event_holds_only_earlier_events() -> None:
    events = _chain_log(users=12)
    split = time_split(events)
    config = PrequentialConfig(max_events=None, seed=0)
    spy = _Spy(split.n_items)
    recorder = ContextRecorder(KnnParams(), config.k)
    arms = Arms({"record": recorder, "sasrec": SequentialArm(spy, config.k, KnnParams())})

    records, n_eligible = replay(
        events,
        list(split.item_ids),
        arms,
        cutoff_ms=split.train_end_ms,
        start_ms=split.train_end_ms,
        config=config,
    )

    assert len(records) == n_eligible > 0
    expected_all = _strictly_before(events, split.item_index)
    by_event = dict(
        zip(events.sort_values("event_time", kind="stable")["event_id"], expected_all, strict=True)
    )
    expected = [by_event[r["event_id"]] for r in records]
    histories = [c.history for c in recorder.contexts]
    assert histories == expected
    # every event here has a history, so the arm fed the model exactly those sequences
    assert spy.fed == expected
    for record, history in zip(records, histories, strict=True):
        assert split.item_index[record["item_id"]] not in history
    # the check is not vacuous: a sequence with the current event folded in differs
    leaked = expected[0] + (split.item_index[records[0]["item_id"]],)
    assert leaked != expected[0]


def test_training_windows_target_every_item_but_the_first_once() -> None:
    from training.fit.loops import training_windows

    sequences = [list(range(7)), [3, 4], [5]]
    inputs, targets = training_windows(sequences, length=3)

    targets_seen = sorted(int(t) - 1 for t in targets.flatten() if t > 0)
    assert targets_seen == sorted([*range(1, 7), 4])
    # each target follows its input by one step
    for x, y in zip(inputs, targets, strict=True):
        valid = y > 0
        assert ((x[valid][1:] == y[valid][:-1]).all()).item()


def test_training_sequences_follow_the_worker_fold_and_stop_at_the_cutoff() -> None:
    events = _chain_log(users=5)
    split = time_split(events)

    sequences = study.training_sequences(events, split)

    train = events[events["event_time"] < split.train_end_ms].sort_values("event_time")
    for user, sequence in zip(
        sorted(train["user_id"].unique(), key=lambda u: int(u[1:])), sequences, strict=True
    ):
        items = train[train["user_id"] == user]["item_id"]
        assert sequence == [split.item_index[i] for i in items]


@pytest.mark.parametrize("weight", [None, 1.0])
def test_lists_never_hold_a_seen_item(weight: float | None) -> None:
    events = _chain_log(users=12)
    split = time_split(events)
    config = PrequentialConfig(max_events=None, seed=0)
    recorder = ContextRecorder(KnnParams(), config.k)
    replay(
        events,
        list(split.item_ids),
        Arms({"record": recorder}),
        cutoff_ms=split.train_end_ms,
        start_ms=split.train_end_ms,
        config=config,
    )
    from analysis.sequential_arms import sequential_lists

    model = Sasrec(split.n_items, _small())
    lists = sequential_lists(model, recorder.contexts, config.k, weight)

    for items, context in zip(lists, recorder.contexts, strict=True):
        assert len(items) == config.k
        assert not set(items) & set(context.seen)
