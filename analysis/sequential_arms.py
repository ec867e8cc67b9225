"""SASRec as a prequential arm: what it reads from the folded state, and its top-k lists.

An arm of :func:`training.evaluation.prequential.replay` answers (user, state) before the
event is folded, so the sequence it feeds the model is the user's recent items as the
worker folded them, strictly before the event. :class:`Context` is that read, kept so
that a period's events can be scored by many models without replaying the log again
(:class:`ContextRecorder`); :class:`SequentialArm` answers in the loop with the same
functions, one context at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from models.sasrec import Sasrec
from serving.knn import KnnParams, top_k
from serving.knn import recommend as knn_recommend
from training.evaluation.prequential_state import OnlineState

BATCH = 256  # contexts scored at once


@dataclass(frozen=True)
class Context:
    """What an arm reads for one scored event, from the state folded before it."""

    history: tuple[int, ...]  # the user's recent vocabulary items, oldest first
    seen: tuple[int, ...]  # every vocabulary item the user touched: never recommended
    fallback: tuple[int, ...]  # the kNN's answer for a user without history (popularity)
    knn: np.ndarray | None  # (I,) item-kNN scores for the blend; None without history


def context_of(user_id: str, state: OnlineState, knn: KnnParams, k: int) -> Context:
    history = tuple(reversed(state.recent_indices(user_id, state.keep)))
    seen = tuple(state.seen_indices(user_id))
    fallback: tuple[int, ...] = ()
    if not history:
        picks = knn_recommend(state.cooccurrence, [], state.recent_counts, seen, k, knn)
        fallback = tuple(pick.index for pick in picks)
    scores = state.knn_scores(user_id, knn)
    return Context(history, seen, fallback, None if scores is None else scores.astype(np.float32))


def _standardized(scores: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """``scores`` centred and scaled over the ``allowed`` items (0 where they are all equal)."""
    values = scores[allowed]
    spread = values.std()
    return (scores - values.mean()) / spread if spread > 0 else np.zeros_like(scores)


def sequential_lists(
    model: Sasrec, contexts: Sequence[Context], k: int, knn_weight: float | None = None
) -> list[list[int]]:
    """Each context's top k: SASRec's next-item scores, or with ``knn_weight`` the fusion
    ``z(SASRec) + knn_weight * z(item-kNN)`` (each standardized over the items that may be
    recommended); the kNN's popularity fallback for a user without history."""
    lists: list[list[int]] = [list(c.fallback) for c in contexts]
    with_history = [n for n, c in enumerate(contexts) if c.history]
    for start in range(0, len(with_history), BATCH):
        rows = with_history[start : start + BATCH]
        scores = model.next_scores([contexts[n].history for n in rows])  # (B, I)
        for row, n in zip(scores, rows, strict=True):
            context = contexts[n]
            score = row.astype(np.float64)
            if knn_weight is not None and context.knn is not None:
                allowed = np.ones(len(score), bool)
                allowed[list(context.seen)] = False
                score = _standardized(score, allowed) + knn_weight * _standardized(
                    context.knn.astype(np.float64), allowed
                )
            lists[n] = top_k(score, np.zeros(len(score)), context.seen, k)
    return lists


@dataclass
class ContextRecorder:
    """An arm that keeps every context it is asked about and recommends nothing."""

    knn: KnnParams
    k: int
    contexts: list[Context] = field(default_factory=list)

    def __call__(self, user_id: str, state: OnlineState) -> list[int]:
        self.contexts.append(context_of(user_id, state, self.knn, self.k))
        return []


@dataclass
class SequentialArm:
    """SASRec (or its fusion with the item-kNN) answering in the replay loop."""

    model: Sasrec
    k: int
    knn: KnnParams
    knn_weight: float | None = None

    def __call__(self, user_id: str, state: OnlineState) -> list[int]:
        context = context_of(user_id, state, self.knn, self.k)
        return sequential_lists(self.model, [context], self.k, self.knn_weight)[0]
