"""The four models of a set trained from the log, and the stages' static evaluation.

:func:`prepare` splits the log by global time, folds the TRAINING events into the feature
history with the worker's functions and reads every feature from it point-in-time:
DIN examples at each event's time, and two frozen instants (the start of the held-out
tail of the training period, and the training cutoff).

:func:`train_all` trains, in order:

0. the item prior of the cascade (``models.cascade.CascadeModels.item_prior``): log1p
   distinct users per item in the ``prior_days`` before the cutoff (and, for stage 1,
   before the tail's start);
1. on the training period minus its tail (the last ``tail_fraction`` of training events):
   a LightGCN and a DIN whose only job is to build RankNet's lists on the tail users at
   the tail's start, labelled by what those users did in the tail. RankNet thus learns how
   far to trust scores of models that did not see the events it ranks for, as in serving;
2. LightGCN on the whole training period (BPR, positives drawn with recency weights so
   the item embeddings carry what is popular near the cutoff);
3. DIN on the point-in-time examples of the whole training period;
4. RankNet on the tail lists;
5. SASRec (``models.sasrec``) on every training user's item sequence, folded as the worker
   folds it: first on the sequences before the tail, scored after each epoch on the tail's
   next-item questions (NDCG@10, the prequential protocol's question); then on the whole
   period for the best epoch count. It serves the cascade's sequential channel and blend
   term (``models.cascade``).

:func:`evaluate_set` sees nothing after the cutoff but the target's labels: every model and
every feature is frozen at ``split.train_end_ms``, for validation and test alike.
"""

from __future__ import annotations

import functools
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from models.cascade import CascadeConfig, CascadeModels
from models.din import DIN
from models.lightgcn import LightGCN
from models.ranknet import RERANK_FEATURES, RankNet
from models.sasrec import Sasrec, model_fields
from streams.folding import TREND_HALF_LIFE_MS
from training.data.examples import (
    DINExamples,
    FrozenState,
    din_examples,
    fold_history,
    frozen_state,
    item_categories,
)
from training.data.sequences import NextItemQuestions, SequenceData, training_sequences
from training.data.split import SplitConfig, TimeSplit, time_split
from training.evaluation.baselines import recent_distinct_users
from training.evaluation.lists import candidate_lists, list_labels
from training.evaluation.set_evaluation import evaluate_frozen
from training.fit.hyper import Hyper
from training.fit.loops import (
    EpochHook,
    Parallel,
    din_config,
    train_din,
    train_lightgcn,
    train_ranknet,
    train_sasrec,
)

SASREC_QUESTIONS = 2000  # tail events that score each SASRec epoch (a seeded sample)

__all__ = [
    "EpochHook",
    "Hyper",
    "Parallel",
    "TrainedSet",
    "TrainingData",
    "evaluate_set",
    "prepare",
    "train_all",
]


@dataclass
class TrainingData:
    """Everything the loops need; picklable (it is sent to Ray workers)."""

    split: TimeSplit
    din: DINExamples  # point-in-time examples of the whole training period
    categories: torch.Tensor  # (n_items,) long first category of each item; 0 unknown
    category_names: list[str]
    tail_start_ms: int  # training events at or after it are RankNet's held-out tail
    tail: FrozenState  # features just before tail_start_ms
    tail_users: np.ndarray  # users with a relevant tail item
    tail_relevant: sp.csr_matrix  # (n_users, n_items) tail items not seen before the tail
    seen_before_tail: sp.csr_matrix  # (n_users, n_items)
    cutoff: FrozenState  # features just before split.train_end_ms
    sequences: SequenceData | None = None  # SASRec's; None: the set has no SASRec
    engine: str = "asof"


@dataclass
class TrainedSet:
    lightgcn: LightGCN
    din: DIN
    ranknet: RankNet
    cascade_config: CascadeConfig
    configs: dict[str, dict[str, Any]]  # stage -> JSON-able config (streamrec.infra.model_store)
    item_ids: list[str]
    user_ids: list[str]
    history: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    item_prior: torch.Tensor | None = None  # (I,) the cascade's item prior at the cutoff
    sasrec: Sasrec | None = None  # the sequential channel; None when not trained

    def cascade_models(self) -> CascadeModels:
        user_embeddings, item_embeddings = self.lightgcn.exported()
        return CascadeModels(
            user_embeddings=user_embeddings,
            item_embeddings=item_embeddings,
            din=self.din,
            ranknet=self.ranknet,
            item_prior=self.item_prior,
            sasrec=self.sasrec,
        )


def item_prior(split: TimeSplit, end_ms: int, days: float) -> torch.Tensor:
    """(I,) log1p distinct users per item in the ``days`` before ``end_ms`` (training events)."""
    counts = recent_distinct_users(
        split.train_user, split.train_item, split.train_time, end_ms, days, split.n_items
    )
    return torch.from_numpy(np.log1p(counts)).float()


def _matrix(users: np.ndarray, items: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    matrix = sp.csr_matrix((np.ones(len(users), np.float32), (users, items)), shape=shape)
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def prepare(
    events: pd.DataFrame,
    items: pd.DataFrame | None,
    *,
    split: SplitConfig | None = None,
    clicks: pd.DataFrame | None = None,
    engine: str = "asof",
    negatives: int = 3,
    max_history: int = CascadeConfig.max_history,
    tail_fraction: float = 0.1,
    seed: int = 0,
) -> TrainingData:
    """Split the log and build every point-in-time tensor the stages train on.

    ``events`` is the archived interaction log (``event_id, event_time, user_id, item_id,
    action, rating``), ``clicks`` the archived clicks if any, ``items`` the catalogue.
    """
    if not 0 < tail_fraction < 1:
        raise ValueError(f"tail_fraction must be in (0, 1), got {tail_fraction}")
    time_split_ = time_split(events, split)
    train_events = events[events["event_time"] < time_split_.train_end_ms]
    train_clicks = (
        clicks[clicks["event_time"] < time_split_.train_end_ms] if clicks is not None else None
    )
    categories, names = item_categories(items, time_split_)
    times = np.sort(time_split_.train_time)
    tail_start = int(times[int(len(times) * (1 - tail_fraction))])
    with tempfile.TemporaryDirectory(prefix="streamrec-history-") as folder:
        # SASRec's sequences need no history: folded beside it
        history, sequences = fold_history(
            train_events,
            train_clicks,
            max_history,
            Path(folder),
            beside=functools.partial(
                training_sequences,
                train_events,
                time_split_.item_index,
                time_split_.train_end_ms,
                tail_start,
                max_length=max_history,
                max_questions=SASREC_QUESTIONS,
                seed=seed,
            ),
        )
        assert sequences is not None
        examples = din_examples(
            train_events,
            history,
            time_split_,
            negatives=negatives,
            max_history=max_history,
            seed=seed,
            engine=engine,
        )
        tail = frozen_state(
            history,
            time_split_,
            tail_start,
            max_history=max_history,
            categories=categories,
            engine=engine,
        )
        cutoff = frozen_state(
            history,
            time_split_,
            time_split_.train_end_ms,
            max_history=max_history,
            categories=categories,
            engine=engine,
        )
    shape = (time_split_.n_users, time_split_.n_items)
    before = time_split_.train_time < tail_start
    seen_before = _matrix(time_split_.train_user[before], time_split_.train_item[before], shape)
    in_tail = _matrix(time_split_.train_user[~before], time_split_.train_item[~before], shape)
    tail_relevant = (in_tail - in_tail.multiply(seen_before)).tocsr()
    tail_relevant.eliminate_zeros()
    tail_users = np.flatnonzero(np.diff(tail_relevant.indptr) > 0)
    return TrainingData(
        split=time_split_,
        din=examples,
        categories=categories,
        category_names=names,
        tail_start_ms=tail_start,
        tail=tail,
        tail_users=tail_users,
        tail_relevant=tail_relevant,
        seen_before_tail=seen_before,
        cutoff=cutoff,
        sequences=sequences,
        engine=engine,
    )


def _ranknet_lists(
    data: TrainingData,
    hyper: Hyper,
    seed: int,
    parallel: Parallel,
    cascade_config: CascadeConfig,
    on_epoch: EpochHook | None,
    history: dict[str, list[dict[str, float]]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stage 1: models of the pre-tail period build labelled lists at the tail's start."""
    split = data.split
    before = split.train_time < data.tail_start_ms
    users = torch.from_numpy(split.train_user[before])
    gcn, adj, history["lightgcn_tail"] = train_lightgcn(
        split.n_users,
        split.n_items,
        users,
        torch.from_numpy(split.train_item[before]),
        torch.from_numpy(split.train_time[before]),
        data.tail_start_ms,
        hyper.lightgcn,
        seed + 17,
        parallel,
        _renamed(on_epoch, "lightgcn_tail"),
    )
    din, history["din_tail"] = train_din(
        data.din.select(data.din.time < data.tail_start_ms),
        split.n_items,
        data.categories,
        len(data.category_names),
        hyper.din,
        seed + 17,
        parallel,
        _renamed(on_epoch, "din_tail"),
    )
    user_emb, item_emb = gcn.export_embeddings(adj)
    trained = np.bincount(users.numpy(), minlength=split.n_users) > 0
    lists = candidate_lists(
        CascadeModels(
            user_emb,
            item_emb,
            din,
            None,
            item_prior(split, data.tail_start_ms, cascade_config.prior_days),
        ),
        data.tail,
        data.tail_users,
        data.seen_before_tail,
        trained,
        cascade_config,
    )
    labels = list_labels(lists, data.tail_relevant, data.tail_users)
    keep = labels.sum(1) > 0  # a list without a relevant item has no pair to learn from
    return lists.features[keep], labels[keep], lists.mask[keep]


def _renamed(on_epoch: EpochHook | None, stage: str) -> EpochHook | None:
    if on_epoch is None:
        return None

    def hook(_stage: str, epoch: int, metrics: dict[str, float]) -> None:
        on_epoch(stage, epoch, metrics)

    return hook


def next_item_ndcg(model: Sasrec, questions: NextItemQuestions, k: int = 10) -> float:
    """Mean NDCG@k of SASRec's top k (seen items masked) for each question's next item."""
    if len(questions) == 0:
        return 0.0
    gains = []
    for start in range(0, len(questions), 512):
        batch = slice(start, start + 512)
        scores = torch.from_numpy(model.next_scores(questions.histories[batch]))  # (B, I)
        seen, targets = questions.seen[batch], questions.targets[batch]
        for row, (masked, target) in enumerate(zip(seen, targets, strict=True)):
            score = scores[row]
            score[masked] = float("-inf")
            rank = int((score > score[target]).sum())
            gains.append(1.0 / np.log2(rank + 2) if rank < k else 0.0)
    return float(np.mean(gains))


def fit_sasrec(
    data: TrainingData,
    hyper: Hyper,
    seed: int,
    parallel: Parallel,
    on_epoch: EpochHook | None,
    history: dict[str, list[dict[str, float]]],
) -> Sasrec | None:
    """Stage 5: the epoch count chosen on the tail, then the whole period for that many."""
    sequences = data.sequences
    if sequences is None or hyper.sasrec.epochs == 0 or not sequences.whole:
        return None
    n_items, max_length = data.split.n_items, sequences.max_length
    chosen = hyper.sasrec.epochs
    if len(sequences.tail) > 0:
        _, history["sasrec_tail"] = train_sasrec(
            n_items,
            sequences.before_tail,
            hyper.sasrec.config(max_length, seed),
            lambda model: next_item_ndcg(model, sequences.tail),
            parallel,
            _renamed(on_epoch, "sasrec_tail"),
            stage="sasrec_tail",
        )
        figures = [epoch["validation_ndcg_at_10"] for epoch in history["sasrec_tail"]]
        chosen = int(np.argmax(figures)) + 1
    model, history["sasrec"] = train_sasrec(
        n_items,
        sequences.whole,
        hyper.sasrec.config(max_length, seed, epochs=chosen),
        None,
        parallel,
        on_epoch,
    )
    return model


def train_all(
    data: TrainingData,
    hyper: Hyper | dict[str, Any] | None,
    seed: int,
    parallel: Parallel = Parallel(),  # noqa: B008 - frozen, so a shared default is safe
    on_epoch: EpochHook | None = None,
) -> TrainedSet:
    """Train LightGCN, DIN, RankNet and SASRec (see the module docstring); deterministic
    per seed."""
    hyper = Hyper.read(hyper)
    cascade_config = hyper.cascade
    split = data.split
    history: dict[str, list[dict[str, float]]] = {}
    features, labels, mask = _ranknet_lists(
        data, hyper, seed, parallel, cascade_config, on_epoch, history
    )

    gcn, adj, history["lightgcn"] = train_lightgcn(
        split.n_users,
        split.n_items,
        torch.from_numpy(split.train_user),
        torch.from_numpy(split.train_item),
        torch.from_numpy(split.train_time),
        split.train_end_ms,
        hyper.lightgcn,
        seed,
        parallel,
        on_epoch,
    )
    gcn.store_exports(adj)
    din, history["din"] = train_din(
        data.din,
        split.n_items,
        data.categories,
        len(data.category_names),
        hyper.din,
        seed,
        parallel,
        on_epoch,
    )
    ranknet, history["ranknet"] = train_ranknet(
        features, labels, mask, hyper.ranknet, seed, parallel, on_epoch
    )
    sasrec = fit_sasrec(data, hyper, seed, parallel, on_epoch, history)
    din_model = din_config(
        hyper.din, split.n_items, len(data.category_names), int(data.din.context.shape[1])
    )
    configs: dict[str, dict[str, Any]] = {
        "lightgcn": {
            "model": asdict(gcn.config),
            "cascade": asdict(cascade_config),
            "features": {"trend_half_life_ms": TREND_HALF_LIFE_MS},
            "training": asdict(hyper.lightgcn),
        },
        "din": {
            "model": asdict(din_model),
            "item_categories": data.categories.tolist(),
            "category_names": data.category_names,
            "training": asdict(hyper.din),
        },
        "ranknet": {
            "model": asdict(ranknet.config),
            "features": list(RERANK_FEATURES),
            "training": asdict(hyper.ranknet),
            "tail_start_ms": data.tail_start_ms,
            "n_lists": int(features.shape[0]),
        },
        "sasrec": {
            "model": model_fields(sasrec.config) if sasrec is not None else None,
            "training": asdict(hyper.sasrec),
            "epochs": len(history.get("sasrec", [])),
        },
    }
    return TrainedSet(
        lightgcn=gcn,
        din=din,
        ranknet=ranknet,
        cascade_config=cascade_config,
        configs=configs,
        item_ids=[str(i) for i in split.item_ids],
        user_ids=[str(u) for u in split.user_ids],
        history=history,
        item_prior=item_prior(split, split.train_end_ms, cascade_config.prior_days),
        sasrec=sasrec,
    )


def evaluate_set(trained: TrainedSet, data: TrainingData, target: str = "test") -> dict[str, Any]:
    """Static evaluation on ``target`` with every model and feature frozen at the cutoff."""
    return evaluate_frozen(
        trained.cascade_models(), trained.cascade_config, data.split, data.cutoff, target
    )
