"""Prequential evaluation on planted patterns where only live features can know the answer."""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from models.cascade import CascadeConfig, CascadeModels
from serving.loading import LoadedCascade
from streams.folding import TREND_HALF_LIFE_MS
from training.evaluation import prequential, prequential_state
from training.evaluation.prequential import (
    KnnParams,
    OnlineState,
    PrequentialConfig,
    beats_baselines,
    eligible_events,
    prequential_evaluation,
    tune_knn,
    validate,
)
from training.evaluation.prequential_report import check_targets, markdown

HOUR = 3_600_000
N_PAIRS = 40
CUTOFF = 1_000 * HOUR


def _cascade() -> LoadedCascade:
    """Items 2j and 2j+1 share one embedding, orthogonal to every other pair's: recall from
    the user's recent items puts the partner of the latest item first. No user rows, DIN or
    RankNet, so recall (and its recent items) alone decides."""
    embeddings = torch.zeros(2 * N_PAIRS, N_PAIRS)
    for pair in range(N_PAIRS):
        embeddings[2 * pair : 2 * pair + 2, pair] = 1.0
    item_ids = tuple(f"i{n}" for n in range(2 * N_PAIRS))
    return LoadedCascade(
        label="planted",
        set_id="planted",
        models=CascadeModels(item_embeddings=embeddings),
        config=CascadeConfig(n_candidates=50, rerank_depth=20),
        item_ids=item_ids,
        item_index={item: n for n, item in enumerate(item_ids)},
        user_index={},
        trend_half_life_ms=TREND_HALF_LIFE_MS,
        categories=None,
        user_context_dim=0,
    )


def _blind_cascade() -> LoadedCascade:
    """Embeddings that know nothing (random), with a co-visitation channel: only the
    stream's pairs can find the partners."""
    noise = torch.randn(2 * N_PAIRS, 8, generator=torch.Generator().manual_seed(0))
    return dataclasses.replace(
        _cascade(),
        models=CascadeModels(item_embeddings=noise),
        config=CascadeConfig(n_candidates=50, rerank_depth=20, covisit_candidates=10),
    )


def _log(users: int = 30, seed: int = 0, new_users: int = 0) -> pd.DataFrame:
    """Before the cutoff each user sees one pair (both items); after it, a new pair per
    user: first one item, an hour later its partner. ``new_users`` more users only act
    after the cutoff."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users + new_users):
        before, after = rng.choice(N_PAIRS, size=2, replace=False)
        if u < users:
            start = CUTOFF - 100 * HOUR + u * HOUR
            rows += [(f"u{u}", f"i{2 * before}", start), (f"u{u}", f"i{2 * before + 1}", start + 1)]
        later = CUTOFF + 10 * HOUR + u * 2 * HOUR
        rows += [(f"u{u}", f"i{2 * after}", later), (f"u{u}", f"i{2 * after + 1}", later + HOUR)]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "event_time"])
    frame["event_id"] = [f"e{n}" for n in range(len(frame))]
    frame["action"] = "view"
    return frame.sort_values("event_time", kind="stable", ignore_index=True)


def _records(cascade: LoadedCascade | None, events: pd.DataFrame, **kwargs: Any) -> list[dict]:
    captured: list[list[dict]] = []
    original = prequential.prequential_summary

    def keep(records: list[dict], *args: Any, **more: Any) -> dict:
        captured.append(records)
        return original(records, *args, **more)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(prequential, "prequential_summary", keep)
        prequential_evaluation(cascade, events, cutoff_ms=CUTOFF, start_ms=CUTOFF, **kwargs)
    return captured[0]


def test_live_features_win_on_the_planted_pairs() -> None:
    report = prequential_evaluation(
        _cascade(), _log(new_users=10), cutoff_ms=CUTOFF, start_ms=CUTOFF
    )
    assert report["all"]["n_events"] == report["n_eligible"] == 80  # two per user
    arms = report["all"]["arms"]
    assert arms["cascade live"]["ndcg@10"] > arms["cascade frozen"]["ndcg@10"] + 0.3
    assert report["all"]["paired"]["cascade frozen"]["wilcoxon_p"] < 0.01
    # Users first seen after the cutoff are their own slice, and live features serve them.
    new = report["slices"]["new_users"]
    assert new["n_events"] == 20 and new["arms"]["cascade live"]["hit@10"] >= 0.5
    assert report["slices"]["returning_users"]["n_events"] == 60
    # The fixed item-kNN has seen every pair co-occur before the cutoff: it finds partners.
    assert arms["item-kNN live"]["hit@10"] >= 0.3  # half the events are first-of-pair


def test_the_cascade_arm_calls_the_served_function_with_the_folded_features(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[str, Any, int]] = []
    served = prequential_state.serve

    def spy(serving: Any, user_id: str, recent: Any, k: int, titles: Any) -> Any:
        calls.append((user_id, recent, serving.items.latest_event_time))
        return served(serving, user_id, recent, k, titles)

    monkeypatch.setattr(prequential_state, "serve", spy)
    events = _log(users=5)
    records = _records(_cascade(), events)
    assert len(calls) == 2 * len(records)  # live, then frozen, for each event
    partner = next(r for r in records if int(r["item_id"][1:]) % 2 == 1)
    index = records.index(partner)
    (_, live_recent, live_now), (_, frozen_recent, frozen_now) = calls[2 * index : 2 * index + 2]
    first = events[(events.user_id == partner["user_id"]) & (events.event_time > CUTOFF)]
    # Live: the item just before is the newest recent item; "now" is that event's time.
    assert live_recent.items[0] == first.iloc[0].item_id
    assert live_now == first.iloc[0].event_time
    # Frozen: only what the user did before the cutoff; "now" is before the cutoff.
    assert first.iloc[0].item_id not in frozen_recent.items and frozen_now < CUTOFF
    assert partner["cascade live"] == 0


def test_frozen_arms_ignore_everything_after_the_cutoff() -> None:
    """Extra post-cutoff repeats (never scored) leave every frozen answer as it was."""
    events = _log()
    extra = events[events["event_time"] < CUTOFF].copy()
    extra["event_time"] = extra["event_time"] + 105 * HOUR  # re-seen just before the test
    extra["event_id"] = "x" + extra["event_id"]
    noisy = pd.concat([events, extra]).sort_values("event_time", kind="stable", ignore_index=True)
    clean, dirty = _records(_cascade(), events), _records(_cascade(), noisy)
    frozen = [name for name in clean[0] if name.endswith(" frozen")]
    assert len(frozen) == 4 and len(clean) == len(dirty) == 60
    for a, b in zip(clean, dirty, strict=True):
        assert [a[name] for name in frozen] == [b[name] for name in frozen]


def test_knn_is_cosine_co_occurrence_over_recent_items_weighted_by_position() -> None:
    state = OnlineState(["a", "b", "c"], keep=50, recent_days=14)
    rows = [("u", "a"), ("u", "b"), ("v", "a"), ("v", "c"), ("w", "b"), ("x", "c")]
    for n, (user, item) in enumerate(rows):
        state.fold(
            prequential.Interaction.model_construct(
                event_id=str(n), event_time=n, user_id=user, item_id=item, action="view"
            )
        )
    # users per item: a 2, b 2, c 2; co-occurrence a-b 1, a-c 1, b-c 0.
    assert state.cooccurrence.rows([0]).toarray().tolist() == [[0, 1, 1]]
    scores = state.knn_scores("u", KnnParams(history=2, decay=0.5))
    # u's recent items: b (weight 1), a (weight 0.5); cosine(x, y) = C / sqrt(n_x n_y).
    assert scores is not None
    assert scores.tolist() == pytest.approx([0.5, 0.5 * 0.5, 0.5 * 0.5 + 0.0])
    assert state.knn_scores("nobody", KnnParams(20, 0.9)) is None


def test_the_knn_arms_read_a_cosine_held_only_until_the_next_fold() -> None:
    state = OnlineState(["a", "b", "c", "d"], keep=50, recent_days=14)
    arm = prequential_state.knn_arm(3, KnnParams(history=2, decay=0.5))

    def fold(n: int, user: str, item: str) -> None:
        state.fold(
            prequential.Interaction.model_construct(
                event_id=str(n), event_time=n, user_id=user, item_id=item, action="view"
            )
        )

    for n, (user, item) in enumerate([("u", "a"), ("v", "a"), ("v", "b"), ("w", "a")]):
        fold(n, user, item)
    assert arm("u", state)[0] == 1  # b: the one item seen with a
    held = state.cosine("u")
    assert state.cosine("u") is held  # read again before a fold: the same rows
    fold(10, "w", "c")
    fold(11, "x", "a")
    fold(12, "x", "c")  # now a co-occurs with c twice, with b once
    assert state.cosine("u") is not held
    assert arm("u", state)[0] == 2


def test_knn_tuning_picks_the_best_of_its_grid() -> None:
    events = _log()
    params, grid = tune_knn(
        events,
        [f"i{n}" for n in range(2 * N_PAIRS)],
        cutoff_ms=CUTOFF,
        start_ms=CUTOFF,
        end_ms=CUTOFF + 1000 * HOUR,
        config=PrequentialConfig(),
        histories=(1, 20),
        decays=(0.5, 1.0),
    )
    assert grid[f"{params.history}/{params.decay}"] == max(grid.values())
    # Only the newest item predicts its partner: history 1 is at least as good as 20.
    assert grid["1/1.0"] >= grid["20/1.0"]


def test_sampling_is_bounded_and_deterministic() -> None:
    config = PrequentialConfig(max_events=10, seed=3)
    first = _records(_cascade(), _log(), config=config)
    second = _records(_cascade(), _log(), config=config)
    assert len(first) == 10
    assert [r["event_id"] for r in first] == [r["event_id"] for r in second]


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
    with pytest.raises(ValueError, match="before the cutoff"):
        prequential_evaluation(_cascade(), _log(), cutoff_ms=CUTOFF, start_ms=CUTOFF - 1)


def test_a_target_is_met_only_at_its_significance() -> None:
    report = prequential_evaluation(_cascade(), _log(users=8), cutoff_ms=CUTOFF, start_ms=CUTOFF)
    checks = {c["target"].split(" >=")[0]: c for c in check_targets(report)}
    live_frozen = checks["cascade live / frozen NDCG@10"]
    # (frozen NDCG is 0 here: the ratio is undefined, the gain is not)
    assert live_frozen["value"] in (None, pytest.approx(live_frozen["value"]))
    assert live_frozen["p"] < 0.05 and live_frozen["met"]
    # The same means with a p-value above 0.05 are not "met".
    report["all"]["paired"]["cascade frozen"]["wilcoxon_p"] = 0.08
    checks = {c["target"].split(" >=")[0]: c for c in check_targets(report)}
    assert not checks["cascade live / frozen NDCG@10"]["met"]
    assert "| cascade live |" in markdown(report)


def test_the_gate_needs_a_significant_win_over_every_live_baseline() -> None:
    events = _log(new_users=10)
    items = _cascade().item_ids
    window = {"cutoff_ms": CUTOFF, "start_ms": CUTOFF, "end_ms": CUTOFF + 1000 * HOUR}
    result = validate(_cascade(), events, items, config=PrequentialConfig(), **window)
    assert set(result["all"]["arms"]) == {
        "cascade live",
        "popularity live",
        "popularity 14d live",
        "item-kNN (tuned) live",
    }
    # The planted cascade finds every partner: it beats all of them, significantly.
    assert beats_baselines(result) is None
    # Without embeddings the same set serves live popularity: it loses to the kNN.
    blind = dataclasses.replace(_cascade(), models=CascadeModels())
    result = validate(blind, events, items, config=PrequentialConfig(), **window)
    verdict = beats_baselines(result)
    assert verdict is not None and "does not beat item-kNN (tuned) live" in verdict


def test_validation_chooses_the_blend_weight_that_follows_the_co_visitation() -> None:
    """Embeddings that know nothing (random), a co-visitation channel that knows every pair
    seen before: only a co-visitation weight > 0 puts the partner first, and the validation
    replay picks one; the gate reads the cascade with the blend it picked."""
    cascade = _blind_cascade()
    events = _log(users=30, new_users=10)
    window = {"cutoff_ms": CUTOFF, "start_ms": CUTOFF, "end_ms": CUTOFF + 1000 * HOUR}
    result = validate(cascade, events, cascade.item_ids, config=PrequentialConfig(), **window)
    blend = result["blend"]
    grid = blend["grid"]
    assert blend["covisit_weight"] > 0
    assert grid["0/0"] < max(grid.values())
    chosen = f"{blend['covisit_weight']:g}/{blend['final_recall_weight']:g}"
    assert result["all"]["arms"]["cascade live"]["ndcg@10"] == pytest.approx(grid[chosen])
    assert "blend" not in validate(
        None, events, cascade.item_ids, config=PrequentialConfig(), **window
    )


def test_the_chosen_blend_is_what_the_set_registers() -> None:
    from training.prequential_run import apply_blend

    trained = SimpleNamespace(
        cascade_config=CascadeConfig(covisit_weight=2.0),
        configs={"lightgcn": {"cascade": dataclasses.asdict(CascadeConfig(covisit_weight=2.0))}},
    )
    blend = {"covisit_weight": 4.0, "final_recall_weight": 0.5, "grid": {}}
    assert apply_blend(trained, {"blend": blend})
    assert trained.cascade_config.covisit_weight == 4.0
    assert trained.configs["lightgcn"]["cascade"]["final_recall_weight"] == 0.5
    assert not apply_blend(trained, {})


def test_replays_continued_from_one_fold_of_the_cutoff_equal_fresh_ones() -> None:
    """``evaluate_trained`` folds the log before the cutoff once for the validation and the
    test replays: each continues from its own copy and answers as if it had folded the
    log itself; the shared fold is left as it was."""
    events, cascade = _log(new_users=10), _cascade()
    middle = CUTOFF + 50 * HOUR  # validation before it, test after
    config = PrequentialConfig()
    at_cutoff = prequential.fold_to_cutoff(events, cascade.item_ids, CUTOFF, config=config)
    folded = (at_cutoff.state.version, at_cutoff.position, len(at_cutoff.state.users))
    assert 0 < at_cutoff.position < len(events)

    def validation(**shared: Any) -> dict[str, Any]:
        return validate(
            cascade,
            events,
            cascade.item_ids,
            cutoff_ms=CUTOFF,
            start_ms=CUTOFF,
            end_ms=middle,
            config=config,
            **shared,
        )

    fresh, continued = validation(), validation(at_cutoff=at_cutoff)
    assert continued["all"] == fresh["all"] and fresh["all"]["n_events"] > 20
    assert continued["knn_tuned"] == fresh["knn_tuned"]
    test = _records(cascade, events, config=config)
    test_continued = _records(cascade, events, config=config, at_cutoff=at_cutoff)
    assert test_continued == test and len(test) == 80
    assert (at_cutoff.state.version, at_cutoff.position, len(at_cutoff.state.users)) == folded
    with pytest.raises(ValueError, match="another cutoff"):
        prequential_evaluation(
            cascade, events, cutoff_ms=CUTOFF + HOUR, start_ms=CUTOFF + HOUR, at_cutoff=at_cutoff
        )


def test_a_replay_shared_among_forked_processes_equals_one_replay() -> None:
    """``processes`` > 1 shares the sampled events among forked processes, each folding up
    to its share: the same records, the same validation (the kNN, the blend, the gate's
    figures) and the same test table as one process."""
    cascade = _blind_cascade()
    events = _log(users=30, new_users=10)
    window = {"cutoff_ms": CUTOFF, "start_ms": CUTOFF, "end_ms": CUTOFF + 1000 * HOUR}
    one, three = PrequentialConfig(), PrequentialConfig(processes=3)
    alone = validate(cascade, events, cascade.item_ids, config=one, **window)
    shared = validate(cascade, events, cascade.item_ids, config=three, **window)
    assert shared["all"] == alone["all"] and alone["all"]["n_events"] > 20
    assert shared["blend"] == alone["blend"] and shared["knn_tuned"] == alone["knn_tuned"]
    test_alone = _records(cascade, events, config=one)
    test_shared = _records(cascade, events, config=three)
    assert test_shared == test_alone and len(test_alone) == 80
    # a part that fails fails the replay (it does not leave the others waiting)
    with pytest.raises(ZeroDivisionError):
        prequential.replay_in_parts(
            2,
            list,
            interactions=events,
            item_ids=cascade.item_ids,
            arms=prequential.Arms({"broken": lambda user, state: [1 // 0]}),
            cutoff_ms=CUTOFF,
            start_ms=CUTOFF,
        )
    with pytest.raises(ValueError, match="part 3 of 3"):
        prequential.replay(
            events,
            cascade.item_ids,
            prequential.Arms({}),
            cutoff_ms=CUTOFF,
            start_ms=CUTOFF,
            part=(3, 3),
        )


def test_the_item_rows_clock_counts_items_outside_the_vocabulary() -> None:
    """The replay's item rows are views of the state's arrays, rebuilt per fold; their
    stream clock reads every item the log touched, as the API's item refresh does."""
    state = OnlineState(["a", "b"], keep=50, recent_days=14)
    times = {"a": 10 * HOUR, "b": 11 * HOUR, "new": 12 * HOUR}
    for n, (item, at) in enumerate(times.items()):
        state.fold(
            prequential.Interaction.model_construct(
                event_id=str(n), event_time=at, user_id="u", item_id=item, action="view"
            )
        )
    rows = state.item_features()
    assert rows.latest_event_time == prequential_state.stream_clock(list(times.values()))
    assert rows.latest_event_time == 12 * HOUR  # the item outside the vocabulary's time
    assert rows.last_event_time.tolist() == [10 * HOUR, 11 * HOUR]


def _zipf_interactions(
    seed: int, events: int, users: int, items: int, exponent: float
) -> Iterator[prequential.Interaction]:
    """Interactions a second apart, users drawn at random, Zipf-popular items ``i0``..."""
    rng = np.random.default_rng(seed)
    for n in range(events):
        yield prequential.interaction_of(
            SimpleNamespace(
                event_id=f"e{n}",
                event_time=n * 1_000,
                user_id=f"u{int(rng.integers(0, users))}",
                item_id=f"i{int(rng.zipf(exponent)) % items}",
            )
        )


def test_co_visitation_rows_chosen_from_the_changed_neighbours_equal_rows_chosen_afresh() -> None:
    """The state chooses a changed row again from its last neighbours and the changed ones
    (counts only grow): at every read each row equals the heaviest of all its counts, also
    for rows past the merge bound (chosen from all counts) and after a copy."""
    from streams.folding import heaviest_covisits

    n_items = 400
    item_ids = [f"i{n}" for n in range(n_items)]
    state = OnlineState(item_ids, keep=50, recent_days=14.0)
    rows_checked = 0
    for n, event in enumerate(_zipf_interactions(7, 6_000, 150, n_items, 1.4)):
        state.fold(event)
        if n % 97 == 0 or n == 5_999:
            if n == 97 * 31:
                state = pickle.loads(pickle.dumps(state))
            state.item_features()
            for item_id, item in state.items.items():
                index = state.item_index[item_id]
                want = [state.item_index[i] for i, _ in heaviest_covisits(item.covisits)]
                got = state.neighbours[index][state.neighbours[index] >= 0].tolist()
                assert got == want
                rows_checked += bool(want)
    heavy = max(len(item.covisits) for item in state.items.values())
    assert heavy > 2 * prequential_state.COVISIT_KEEP  # the merge bound was crossed
    assert rows_checked > 1_000


def _random_log(events: int = 3_000, seed: int = 3) -> pd.DataFrame:
    """Zipf-popular items of the planted vocabulary, users drawn at random, across the
    cutoff: many co-visitation rows change between scored events."""
    rng = np.random.default_rng(seed)
    times = np.sort(rng.integers(CUTOFF - 200 * HOUR, CUTOFF + 200 * HOUR, events))
    frame = pd.DataFrame(
        {
            "user_id": [f"u{int(u)}" for u in rng.integers(0, 60, events)],
            "item_id": [f"i{(int(z) - 1) % (2 * N_PAIRS)}" for z in rng.zipf(1.3, events)],
            "event_time": times,
        }
    )
    frame["event_id"] = [f"e{n}" for n in range(events)]
    frame["action"] = "view"
    return frame


def test_rows_chosen_for_the_scored_user_alone_score_as_every_row_chosen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The cascade arms choose only the scored user's changed co-visitation rows
    (``OnlineState.choose_rows_of``); every record equals the replay that chose every
    changed row before each read."""
    events = _random_log()
    blind = _blind_cascade()
    # the co-visitation chooses a fifth of the items and weighs in the final order
    cascade = dataclasses.replace(
        blind,
        config=CascadeConfig(
            n_candidates=16, rerank_depth=16, covisit_candidates=10, covisit_weight=2.0
        ),
    )
    window = {"cutoff_ms": CUTOFF, "start_ms": CUTOFF, "end_ms": CUTOFF + 200 * HOUR}

    def replays() -> tuple[list[dict], dict]:  # the test replay's records, the validation's
        validated = validate(
            cascade, events, cascade.item_ids, config=PrequentialConfig(), **window
        )
        return _records(cascade, events), validated

    lazy = replays()
    with monkeypatch.context() as patch:
        patch.setattr(OnlineState, "choose_rows_of", lambda state, _user: state.choose_rows())
        eager = replays()
        # and the rows matter here: left as last chosen, the lists differ
        patch.setattr(OnlineState, "choose_rows_of", lambda state, _user: None)
        stale = replays()
    assert lazy == eager
    assert stale[0] != eager[0] and stale[1]["blend"]["grid"] != eager[1]["blend"]["grid"]


def test_a_user_s_rows_chosen_alone_equal_every_row_chosen() -> None:
    item_ids = [f"i{n}" for n in range(300)]
    alone = OnlineState(item_ids, keep=50, recent_days=14.0)
    every = OnlineState(item_ids, keep=50, recent_days=14.0)
    checked = 0
    for n, event in enumerate(_zipf_interactions(11, 5_000, 80, 300, 1.3)):
        alone.fold(event)
        every.fold(event)
        if n % 41 == 0:
            user = event.user_id
            alone.choose_rows_of(user)
            every.choose_rows()
            rows = alone.recent_indices(user, alone.keep)
            assert np.array_equal(alone.neighbours[rows], every.neighbours[rows])
            assert np.array_equal(alone.neighbour_weights[rows], every.neighbour_weights[rows])
            assert np.array_equal(alone.covisit_totals, every.covisit_totals)
            checked += len(rows)
    assert checked > 1_000
