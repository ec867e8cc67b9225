"""SASRec's training data: every training user's item sequence, folded as the worker folds.

A user's sequence is what the online store's recent items would hold with no length
limit, oldest first (``streams.folding.fold_interaction``, so ties and repeats are ordered
as serving sees them). The held-out tail of the training period (the events RankNet's
lists are labelled with) chooses SASRec's epoch count: each tail event that is the user's
first interaction with its item is a next-item question asked with the state folded up
to it, as the prequential protocol asks it (``training.evaluation.prequential``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from streams.folding import UserState, fold_interaction
from training.evaluation.prequential import interaction_of

UNBOUNDED = 10**9  # fold_interaction's ``keep``: nothing falls off a training sequence


@dataclass(frozen=True)
class NextItemQuestions:
    """Next-item questions of a period: history, seen items and the item that came next."""

    histories: list[list[int]]  # vocabulary indices, oldest first, the last max_length
    seen: list[list[int]]  # every item the user touched before: masked
    targets: np.ndarray  # (Q,) vocabulary index of the next item

    def __len__(self) -> int:
        return len(self.histories)


@dataclass(frozen=True)
class SequenceData:
    """What ``training.fit.loops.train_sasrec`` reads."""

    before_tail: list[list[int]]  # each user's sequence of events before the tail
    whole: list[list[int]]  # each user's sequence of the whole training period
    tail: NextItemQuestions  # the tail's questions, for choosing the epoch count
    max_length: int  # what SASRec reads: the online store's recent items per user


def training_sequences(
    events: pd.DataFrame,
    item_index: dict[str, int],
    end_ms: int,
    tail_start_ms: int,
    max_length: int,
    max_questions: int,
    seed: int = 0,
) -> SequenceData:
    """Fold ``events`` before ``end_ms`` in time order; ask at most ``max_questions`` of the
    tail's (events from ``tail_start_ms`` on, a seeded sample)."""
    period = events[events["event_time"] < end_ms].sort_values("event_time", kind="stable")
    states: dict[str, UserState] = {}
    before_tail: dict[str, list[int]] = {}
    histories: list[list[int]] = []
    seen: list[list[int]] = []
    targets: list[int] = []
    for row in period.itertuples(index=False):
        event = interaction_of(row)
        state = states.setdefault(event.user_id, UserState())
        if event.event_time >= tail_start_ms:
            if event.user_id not in before_tail:
                before_tail[event.user_id] = _indices(state, item_index)
            history = _indices(state, item_index)
            if history and event.item_id in item_index and event.item_id not in state.items:
                histories.append(history[-max_length:])
                seen.append(sorted(set(history)))
                targets.append(item_index[event.item_id])
        fold_interaction(state, event, keep=UNBOUNDED)
    whole = {user: _indices(state, item_index) for user, state in states.items()}
    for user, sequence in whole.items():
        before_tail.setdefault(user, sequence)
    if len(targets) > max_questions:
        keep = np.sort(np.random.default_rng(seed).choice(len(targets), max_questions, False))
        histories = [histories[i] for i in keep]
        seen = [seen[i] for i in keep]
        targets = [targets[i] for i in keep]
    return SequenceData(
        before_tail=[s for s in before_tail.values() if len(s) >= 2],
        whole=[s for s in whole.values() if len(s) >= 2],
        tail=NextItemQuestions(histories, seen, np.array(targets, np.int64)),
        max_length=max_length,
    )


def _indices(state: UserState, item_index: dict[str, int]) -> list[int]:
    """The user's folded items as vocabulary indices, oldest first."""
    return [item_index[item] for item in reversed(state.items) if item in item_index]
