"""Prequential (test-then-learn) evaluation: replay the period after the cutoff event by event.

Before each scored event (user u, item i, time t) every arm recommends k items for u, then
the event is folded. An event is scored when it is u's first interaction with i and i is
in the set's vocabulary (a repeat cannot be recommended, seen items are masked). Events of
one millisecond are all scored before any of them is folded.

The state is what the online store would hold, folded with the stream worker's own
functions (``streams.folding``: ``fold_interaction`` for a user's recent items,
``ItemDelta``/``fold_item`` for item counts and the trend score). The cascade arms call
``serving.cascade.serve``, the function the API calls for one request, with
``RecentItems`` and ``ItemFeatures`` built from that state:

- **live**: the whole log before t folded in;
- **frozen**: the state at the cutoff T (what serving answers if the store stopped at T).

Baselines in the same loop, each live and frozen at T: all-time popularity (distinct users
per item), popularity over the last ``recent_days`` (interactions in the window ending at
t), and item-kNN: cosine item-item co-occurrence over users' histories, scored over the
user's ``history`` most recent items weighted ``decay**position``, ties and users without
history falling back to the recent popularity. ``tune_knn`` picks history and decay on
another period (the validation period) so the comparison is with the best simple method.

Reported per arm and slice (users new at T / returning): NDCG@k and Hit@k, and paired
tests over events of the live cascade against every other arm (Wilcoxon signed-rank on
the NDCG differences, paired t-test; two-sided).

A replay's scored events can be shared among forked processes
(``PrequentialConfig.processes``, :func:`replay_in_parts`): each folds the period up to its
share (cheap) and scores the arms on it (not); the records are the same as one process's.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

from serving.knn import category_incidence
from serving.loading import LoadedCascade
from streams.events import Click, Interaction
from training.evaluation.blend import BLEND_PREFIX, BlendGrid, best_blend, blend_grid
from training.evaluation.prequential_state import (
    CASCADE,
    KNN,
    KNN_TUNED,
    POPULARITY,
    RECENT_POPULARITY,
    Arm,
    CascadeArm,
    KnnGrid,
    KnnParams,
    OnlineState,
    baseline_arms,
    popularity_arm,
    recent_popularity_arm,
)
from training.forked import forked_map

__all__ = [
    "CASCADE",
    "KNN",
    "Cutoff",
    "KNN_TUNED",
    "POPULARITY",
    "RECENT_POPULARITY",
    "KnnParams",
    "OnlineState",
    "PrequentialConfig",
    "beats_baselines",
    "fold_to_cutoff",
    "prequential_evaluation",
    "replay",
    "replay_in_parts",
    "tune_knn",
    "validate",
]

# The grid tune_knn searches: history lengths and position decays.
DIN_SCORES_KEY = "cascade_din_scores"
DIN_REFERENCE_MAX = 5000  # DIN scores kept in a reference
KNN_HISTORIES = (5, 10, 20, 50)
KNN_DECAYS = (0.6, 0.8, 0.9, 1.0)


@dataclass(frozen=True)
class PrequentialConfig:
    max_events: int | None = 5000  # events scored, sampled uniformly; None scores all
    k: int = 10
    seed: int = 0
    keep: int = 50  # recent items kept per user: the worker's recent_items_max
    recent_days: float = 14.0  # window of the recent-popularity baseline
    knn_history: int = 20  # the item-kNN: 20 most recent items ...
    knn_decay: float = 0.9  # ... weighted 0.9**position
    # Processes a replay's scored events are shared among (``replay_in_parts``): each folds
    # the period up to its share of the events and scores those. 1: in this process.
    processes: int = 1


def interaction_of(row: Any) -> Interaction:
    """A row of the event log (``itertuples``) as the contract's interaction, unchecked:
    the log holds only events the contract accepted."""
    return Interaction.model_construct(
        event_id=str(row.event_id),
        event_time=int(row.event_time),
        user_id=str(row.user_id),
        item_id=str(row.item_id),
        action=getattr(row, "action", "view"),
        # the defaults, given: pydantic looks each missing one up (a fifth of the build)
        schema_version=1,
        rating=None,
        source="live",
    )


def events_in_order(
    interactions: pd.DataFrame, clicks: pd.DataFrame | None = None
) -> list[Interaction | Click]:
    """Interactions and clicks in event-time order (interactions first on ties)."""
    rows: list[tuple[int, int, int, Interaction | Click]] = []
    for n, row in enumerate(interactions.itertuples(index=False)):
        event = interaction_of(row)
        rows.append((event.event_time, 0, n, event))
    if clicks is not None:
        for n, row in enumerate(clicks.itertuples(index=False)):
            click = Click.model_construct(
                event_id=str(row.event_id),
                event_time=int(row.event_time),
                user_id=str(row.user_id),
                request_id=str(row.request_id),
                item_id=str(row.item_id),
                rank=int(row.rank),
            )
            rows.append((click.event_time, 1, n, click))
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    return [r[3] for r in rows]


def eligible_events(
    interactions: pd.DataFrame, item_ids: Sequence[str], start_ms: int, end_ms: int | None = None
) -> np.ndarray:
    """Row positions (in ``interactions``' order) of events that can be scored: in
    ``[start_ms, end_ms)``, on a vocabulary item, the user's first interaction with it."""
    frame = interactions.reset_index(drop=True)
    order = np.argsort(frame["event_time"].to_numpy(np.int64), kind="stable")
    ordered = frame.iloc[order]
    first = ~ordered.duplicated(subset=["user_id", "item_id"], keep="first").to_numpy()
    times = ordered["event_time"].to_numpy(np.int64)
    vocab = set(map(str, item_ids))
    in_vocab = ordered["item_id"].astype(str).isin(vocab).to_numpy()
    keep = first & in_vocab & (times >= start_ms)
    if end_ms is not None:
        keep &= times < end_ms
    return np.sort(order[keep])


def ndcg(rank: int | None, k: int) -> float:
    return 0.0 if rank is None or rank >= k else float(1.0 / np.log2(rank + 2))


def paired_tests(differences: np.ndarray) -> dict[str, Any]:
    """Wilcoxon signed-rank (zero differences dropped) and a paired t-test, two-sided.

    The Wilcoxon p-value is the normal approximation: with ties (most NDCG differences
    are ties) scipy's default falls back to a permutation test that costs seconds per call.
    """
    out: dict[str, Any] = {
        "n": int(len(differences)),
        "n_nonzero": int((differences != 0).sum()),
        "wilcoxon_p": None,
        "ttest_p": None,
    }
    nonzero = differences[differences != 0]
    if len(nonzero) >= 2:
        out["wilcoxon_p"] = float(
            stats.wilcoxon(nonzero, alternative="two-sided", method="asymptotic").pvalue
        )
    if len(differences) >= 2 and np.std(differences) > 0:
        out["ttest_p"] = float(stats.ttest_1samp(differences, 0.0).pvalue)
    return out


@dataclass(frozen=True)
class Arms:
    """Named arms answered from the live state, and from the state frozen at the cutoff."""

    live: Mapping[str, Arm]
    frozen: Mapping[str, Arm] = field(default_factory=dict)


@dataclass(frozen=True)
class Cutoff:
    """The log folded up to a cutoff, for several replays from it (``fold_to_cutoff``):
    folding a 1M-event log's prefix cost each replay minutes."""

    cutoff_ms: int
    events: list[Interaction | Click]  # the whole log in order
    position: int  # the first event at or after the cutoff
    state: OnlineState  # every event before it folded, the window advanced to the cutoff
    with_clicks: bool

    def copy_state(self, categories: sp.csr_matrix | None) -> OnlineState:
        """A copy to fold on (a pickle round trip: ``deepcopy`` took 27 s at 1M events)."""
        state: OnlineState = pickle.loads(pickle.dumps(self.state, pickle.HIGHEST_PROTOCOL))
        state.categories = categories
        return state


def fold_to_cutoff(
    interactions: pd.DataFrame,
    item_ids: Sequence[str],
    cutoff_ms: int,
    *,
    clicks: pd.DataFrame | None = None,
    config: PrequentialConfig | None = None,
) -> Cutoff:
    """Every event before ``cutoff_ms`` folded into a fresh state (no categories: a replay
    sets its own)."""
    config = config or PrequentialConfig()
    events = events_in_order(interactions.reset_index(drop=True), clicks)
    state = OnlineState(item_ids, config.keep, config.recent_days)
    position = 0
    while position < len(events) and events[position].event_time < cutoff_ms:
        state.fold(events[position])
        position += 1
    state.advance(cutoff_ms)
    state.choose_rows()
    return Cutoff(cutoff_ms, events, position, state, clicks is not None)


def replay(
    interactions: pd.DataFrame,
    item_ids: Sequence[str],
    arms: Arms,
    *,
    cutoff_ms: int,
    start_ms: int,
    end_ms: int | None = None,
    clicks: pd.DataFrame | None = None,
    config: PrequentialConfig | None = None,
    item_categories: Mapping[str, Sequence[str]] | None = None,
    at_cutoff: Cutoff | None = None,
    part: tuple[int, int] = (0, 1),
) -> tuple[list[dict[str, Any]], int]:
    """Score every arm on the sampled eligible events of ``[start_ms, end_ms)``.

    ``interactions`` is the log from the beginning (``event_id, event_time, user_id,
    item_id``, optionally ``action``). Returns one record per scored event (the rank of
    the event's item in each arm's list, None when absent) and the number eligible.
    ``at_cutoff``: the same log and clicks already folded to ``cutoff_ms`` (built with the
    same vocabulary and config), continued from a copy instead of folded again.
    ``part``: (index, parts): only the index-th of ``parts`` consecutive shares of the
    sampled events is scored, and the replay stops after its last one; the shares' records
    in order are the whole replay's (``replay_in_parts``).
    """
    config = config or PrequentialConfig()
    index, parts = part
    if not 0 <= index < parts:
        raise ValueError(f"part {index} of {parts} does not exist")
    if start_ms < cutoff_ms:
        raise ValueError(f"start_ms ({start_ms}) is before the cutoff ({cutoff_ms})")
    frame = interactions.reset_index(drop=True)
    eligible = eligible_events(frame, item_ids, start_ms, end_ms)
    n_eligible = len(eligible)
    if config.max_events is not None and n_eligible > config.max_events:
        rng = np.random.default_rng(config.seed)
        eligible = np.sort(rng.choice(eligible, size=config.max_events, replace=False))
    eligible = np.array_split(eligible, parts)[index]
    to_score = set(frame["event_id"].iloc[eligible].astype(str))

    categories = (
        category_incidence([item_categories.get(i, ()) for i in item_ids])
        if item_categories
        else None
    )
    if at_cutoff is None:
        # Folded for this replay alone: it folds on the state itself, not on a copy.
        at_cutoff = fold_to_cutoff(frame, item_ids, cutoff_ms, clicks=clicks, config=config)
        live = at_cutoff.state
        live.categories = categories
    elif (
        at_cutoff.cutoff_ms != cutoff_ms
        or at_cutoff.state.item_ids != tuple(item_ids)
        or at_cutoff.with_clicks != (clicks is not None)
    ):
        raise ValueError("at_cutoff was folded with another cutoff, vocabulary or clicks")
    else:
        live = at_cutoff.copy_state(categories)
    # Only frozen arms read the state at the cutoff; without them it is not copied.
    frozen = at_cutoff.copy_state(categories) if arms.frozen else live
    users_at_cutoff = set(live.users)
    records: list[dict[str, Any]] = []
    events = at_cutoff.events
    position = at_cutoff.position
    while position < len(events) and to_score:
        now = events[position].event_time
        group_end = position
        while group_end < len(events) and events[group_end].event_time == now:
            group_end += 1
        group = events[position:group_end]
        if end_ms is not None and now >= end_ms:
            break
        scored = [e for e in group if isinstance(e, Interaction) and e.event_id in to_score]
        if scored:
            live.advance(now)
            for event in scored:
                record: dict[str, Any] = {
                    "event_id": event.event_id,
                    "user_id": event.user_id,
                    "item_id": event.item_id,
                    "event_time": event.event_time,
                    "new_user": event.user_id not in users_at_cutoff,
                }
                target = live.item_index[event.item_id]
                for name, arm in arms.live.items():
                    record[f"{name} live"] = _rank(target, arm(event.user_id, live))
                for name, arm in arms.frozen.items():
                    record[f"{name} frozen"] = _rank(target, arm(event.user_id, frozen))
                records.append(record)
                to_score.discard(event.event_id)  # a repeated event id is scored once
        for folded in group:
            live.fold(folded)
        position = group_end
    return records, n_eligible


def _rank(target: int, items: list[int]) -> int | None:
    return items.index(target) if target in items else None


def replay_in_parts(
    processes: int, collect: Callable[[], Any], **replay_kwargs: Any
) -> tuple[list[dict[str, Any]], int, list[Any]]:
    """``replay`` with its scored events shared among ``processes`` forked processes, each
    folding the period up to its share and scoring that (folding is cheap, scoring every
    arm is not); the records in order, the number eligible, and ``collect()`` of each part
    in order (what the arms gathered on the side: DIN's logits, timings).

    The processes are forked (the arms, the set and the folded cutoff are inherited, not
    copied through a pipe) and run torch and numpy's BLAS with one thread each
    (:func:`training.forked.forked_map`); they return only their records. The same
    records as one ``replay``.
    """
    processes = max(1, processes)
    if processes == 1:
        records, n_eligible = replay(**replay_kwargs)
        return records, n_eligible, [collect()]
    if replay_kwargs.get("at_cutoff") is None:  # folded once here, not in every part
        replay_kwargs["at_cutoff"] = fold_to_cutoff(
            replay_kwargs["interactions"],
            replay_kwargs["item_ids"],
            replay_kwargs["cutoff_ms"],
            clicks=replay_kwargs.get("clicks"),
            config=replay_kwargs.get("config"),
        )

    def part(index: int) -> Callable[[], tuple[list[dict[str, Any]], int, Any]]:
        def run() -> tuple[list[dict[str, Any]], int, Any]:
            records, n_eligible = replay(**replay_kwargs, part=(index, processes))
            return records, n_eligible, collect()

        return run

    results = forked_map([part(index) for index in range(processes)], processes)
    records = [record for part_records, _, _ in results for record in part_records]
    return records, results[0][1], [collected for _, _, collected in results]


def validate(
    cascade: LoadedCascade | None,
    interactions: pd.DataFrame,
    item_ids: Sequence[str],
    *,
    cutoff_ms: int,
    start_ms: int,
    end_ms: int,
    config: PrequentialConfig,
    histories: Sequence[int] = KNN_HISTORIES,
    decays: Sequence[float] = KNN_DECAYS,
    clicks: pd.DataFrame | None = None,
    at_cutoff: Cutoff | None = None,
) -> dict[str, Any]:
    """One live replay of ``[start_ms, end_ms)`` (the validation period) that tunes the
    item-kNN's history and decay on NDCG@k and the cascade's final blend weights
    (``training.evaluation.blend``; ``blend`` in the result), and scores the cascade with
    the chosen blend (if any) against the popularity baselines and the tuned kNN: what the
    gate reads (:func:`beats_baselines`). Both are tuned on the same events, so the gate
    compares a tuned cascade with a tuned kNN.
    """
    grid = {f"{h}/{d}": KnnParams(h, d) for h in histories for d in decays}
    knn_grid = KnnGrid(config.k, list(grid.values()))
    live: dict[str, Arm] = dict(zip(grid, knn_grid.arms(), strict=True))
    live[POPULARITY] = popularity_arm(config.k)
    live[RECENT_POPULARITY] = recent_popularity_arm(config.k)
    blends = blend_grid(sasrec=cascade.models.sasrec is not None) if cascade is not None else []
    placing = BlendGrid(cascade, config.k, blends) if cascade is not None else None
    if placing is not None:
        live.update(placing.arms())
    records, n_eligible, gathered = replay_in_parts(
        config.processes,
        lambda: placing.din_scores if placing is not None else {},
        interactions=interactions,
        item_ids=item_ids,
        arms=Arms(live),
        cutoff_ms=cutoff_ms,
        start_ms=start_ms,
        end_ms=end_ms,
        clicks=clicks,
        config=config,
        at_cutoff=at_cutoff,
    )
    din_scores: dict[str, list[float]] = {}
    for part in gathered:  # each part's logits per blend, in the parts' order
        for name, logits in part.items():
            din_scores.setdefault(name, []).extend(logits)

    def mean_ndcg(name: str) -> float:
        return (
            float(np.mean([ndcg(r[f"{name} live"], config.k) for r in records])) if records else 0.0
        )

    scores = {name: mean_ndcg(name) for name in grid}
    best = max(scores, key=lambda name: scores[name])
    blend_scores = {blend.name: mean_ndcg(blend.name) for blend in blends}
    chosen = best_blend(blend_scores, blends) if blends else None
    kept = [POPULARITY, RECENT_POPULARITY]
    renamed = [
        {
            **{key: value for key, value in r.items() if not key.endswith(" live")},
            **{f"{name} live": r[f"{name} live"] for name in kept if f"{name} live" in r},
            **({f"{CASCADE} live": r[f"{chosen.name} live"]} if chosen is not None else {}),
            f"{KNN_TUNED} live": r[f"{best} live"],
        }
        for r in records
    ]
    result: dict[str, Any] = {
        "start_ms": start_ms,
        "end_ms": end_ms,
        "n_eligible": n_eligible,
        "knn_tuned": {"history": grid[best].history, "decay": grid[best].decay, "grid": scores},
        "all": summarize(renamed, config.k),
        # DIN's logits of what the cascade with the chosen blend served here: the set's
        # monitoring reference (``training.pipeline`` takes it out of the report)
        DIN_SCORES_KEY: sample_evenly(
            din_scores.get(chosen.name, []) if chosen else [],
            DIN_REFERENCE_MAX,
        ),
    }
    if chosen is not None:
        result["blend"] = {
            "covisit_weight": chosen.covisit_weight,
            "final_recall_weight": chosen.final_recall_weight,
            "sasrec_weight": chosen.sasrec_weight,
            "grid": {name.removeprefix(BLEND_PREFIX): v for name, v in blend_scores.items()},
        }
    return result


def sample_evenly(values: Sequence[float], most: int) -> list[float]:
    """At most ``most`` of ``values``, evenly spaced over them (all when fewer)."""
    if len(values) <= most:
        return list(values)
    return [values[int(i)] for i in np.linspace(0, len(values) - 1, most)]


def tuned_params(validation: Mapping[str, Any]) -> KnnParams:
    tuned = validation["knn_tuned"]
    return KnnParams(int(tuned["history"]), float(tuned["decay"]))


def tune_knn(
    interactions: pd.DataFrame,
    item_ids: Sequence[str],
    *,
    cutoff_ms: int,
    start_ms: int,
    end_ms: int,
    config: PrequentialConfig,
    histories: Sequence[int] = KNN_HISTORIES,
    decays: Sequence[float] = KNN_DECAYS,
) -> tuple[KnnParams, dict[str, float]]:
    """The live item-kNN's history and decay with the best NDCG@k on ``[start_ms, end_ms)``."""
    result = validate(
        None,
        interactions,
        item_ids,
        cutoff_ms=cutoff_ms,
        start_ms=start_ms,
        end_ms=end_ms,
        config=config,
        histories=histories,
        decays=decays,
    )
    return tuned_params(result), result["knn_tuned"]["grid"]


def beats_baselines(validation: Mapping[str, Any], significance: float = 0.05) -> str | None:
    """None when the live cascade beats every live baseline of a ``validate`` result at
    ``significance`` (Wilcoxon, paired); otherwise why not."""
    part = validation["all"]
    arms = part.get("arms", {})
    reference = arms.get(f"{CASCADE} live")
    if reference is None:
        return "no cascade was scored on the validation period"
    metric = next(key for key in reference if key.startswith("ndcg@"))
    for arm, values in sorted(arms.items(), key=lambda kv: -kv[1][metric]):
        if arm == f"{CASCADE} live":
            continue
        p_value = part["paired"][arm].get("wilcoxon_p")
        if reference[metric] <= values[metric] or p_value is None or p_value >= significance:
            return (
                f"prequential validation {metric} of the cascade {reference[metric]:.4f} does "
                f"not beat {arm} {values[metric]:.4f} at p < {significance} "
                f"(Wilcoxon p = {p_value if p_value is None else f'{p_value:.3g}'})"
            )
    return None


def summarize(
    records: list[dict[str, Any]], k: int, reference: str = f"{CASCADE} live"
) -> dict[str, Any]:
    """Per arm: NDCG@k, Hit@k; paired tests of ``reference`` against every other arm."""
    if not records:
        return {"n_events": 0, "arms": {}, "paired": {}}
    names = [key for key in records[0] if key.endswith((" live", " frozen"))]
    gains = {name: np.array([ndcg(r[name], k) for r in records]) for name in names}
    hits = {
        name: np.array([r[name] is not None and r[name] < k for r in records]) for name in names
    }
    out: dict[str, Any] = {
        "n_events": len(records),
        "n_users": len({r["user_id"] for r in records}),
        "arms": {
            name: {f"ndcg@{k}": float(gains[name].mean()), f"hit@{k}": float(hits[name].mean())}
            for name in names
        },
        "paired": {},
    }
    if reference in gains:
        for name in names:
            if name != reference:
                out["paired"][name] = paired_tests(gains[reference] - gains[name])
    return out


def prequential_summary(
    records: list[dict[str, Any]],
    n_eligible: int,
    config: PrequentialConfig,
    **extra: Any,
) -> dict[str, Any]:
    """The report: all events, and the slices of users new at the cutoff and returning."""
    return {
        "k": config.k,
        "n_eligible": n_eligible,
        "max_events": config.max_events,
        "seed": config.seed,
        **extra,
        "all": summarize(records, config.k),
        "slices": {
            "new_users": summarize([r for r in records if r["new_user"]], config.k),
            "returning_users": summarize([r for r in records if not r["new_user"]], config.k),
        },
    }


def prequential_evaluation(
    cascade: LoadedCascade | None,
    interactions: pd.DataFrame,
    *,
    cutoff_ms: int,
    start_ms: int,
    end_ms: int | None = None,
    tuned: KnnParams | None = None,
    clicks: pd.DataFrame | None = None,
    config: PrequentialConfig | None = None,
    item_categories: Mapping[str, Sequence[str]] | None = None,
    at_cutoff: Cutoff | None = None,
) -> dict[str, Any]:
    """The cascade (if any) and the baselines, live and frozen, on ``[start_ms, end_ms)``.

    ``item_categories``: each item's categories; given, the item-kNN the API serves without
    a champion (shared categories counted double, ``serving.knn.SERVED_PARAMS``) is scored
    too.

    ``tuned``: the item-kNN's parameters chosen on another period (``validate``), reported
    beside the issue's fixed kNN.
    """
    config = config or PrequentialConfig()
    item_ids: Sequence[str] = (
        cascade.item_ids if cascade is not None else sorted(set(interactions["item_id"]))
    )
    baselines = baseline_arms(
        config.k,
        KnnParams(config.knn_history, config.knn_decay),
        tuned,
        categories=bool(item_categories),
    )
    live: dict[str, Arm] = {}
    frozen: dict[str, Arm] = {}
    timing: CascadeArm | None = None
    if cascade is not None:
        timing = CascadeArm(cascade, config.k)
        live[CASCADE] = timing
        frozen[CASCADE] = CascadeArm(cascade, config.k)
    live.update(baselines)
    frozen.update(baselines)
    records, n_eligible, gathered = replay_in_parts(
        config.processes,
        lambda: timing.seconds if timing is not None else [],
        interactions=interactions,
        item_ids=item_ids,
        arms=Arms(live, frozen),
        cutoff_ms=cutoff_ms,
        start_ms=start_ms,
        end_ms=end_ms,
        clicks=clicks,
        config=config,
        item_categories=item_categories,
        at_cutoff=at_cutoff,
    )
    seconds = [second for part in gathered for second in part]
    extra: dict[str, Any] = {"cutoff_ms": cutoff_ms, "start_ms": start_ms, "end_ms": end_ms}
    if tuned is not None:
        extra["knn_tuned"] = {"history": tuned.history, "decay": tuned.decay}
    if seconds:
        ms = np.array(seconds) * 1000
        extra["cascade_ms"] = {
            "median": float(np.median(ms)),
            "p95": float(np.percentile(ms, 95)),
            "n": len(ms),
        }
    return prequential_summary(records, n_eligible, config, **extra)
