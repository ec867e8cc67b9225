"""Building a served set from stage folders, and one request's inputs: pure, no registry."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from api.ports import ItemStats, RecentItems
from models import context
from models.din import DINConfig
from models.ranknet import RankNet, RankNetConfig
from models.sasrec import Sasrec, SasrecConfig
from serving.cascade import (
    CLOCK_GAP_MS,
    CLOCK_RANK,
    ItemFeatures,
    ServingSet,
    build_request,
    serve,
    stream_clock,
    user_now,
)
from serving.loading import LoadedCascade, SetLoadError, build_cascade, config_from
from streamrec.infra.model_store import read_folder
from tests.unit.api.model_sets import ITEMS, USERS, TinySet, item_embeddings, stage_folders

# 1998-01-01: a replayed MovieLens log lives in its own time, far from the wall clock.
NINETY_EIGHT = 883_612_800_000
DAY = context.DAY_MS


def _loaded(tmp_path: Path, spec: TinySet | None = None) -> LoadedCascade:
    folders = stage_folders(spec or TinySet(seed=5), tmp_path)
    return build_cascade(
        "cascade-test", "set-test", {s: read_folder(f) for s, f in folders.items()}
    )


def test_configs_are_read_tolerantly() -> None:
    config = config_from(
        DINConfig, {"item_dim": 4, "mlp_hidden": [8, 4], "added_later": True}, n_items=9
    )
    assert config == DINConfig(n_items=9, item_dim=4, mlp_hidden=(8, 4))
    # A value in the folder wins over the caller's default.
    assert config_from(DINConfig, {"n_items": 3}, n_items=9).n_items == 3


def test_a_set_is_built_from_its_folders(tmp_path: Path) -> None:
    loaded = _loaded(tmp_path)
    assert loaded.item_ids == ITEMS and loaded.item_index["b"] == 1
    assert loaded.user_index == {user: n for n, user in enumerate(USERS)}
    assert loaded.stages == {"lightgcn": True, "din": True, "ranknet": True, "sasrec": True}
    assert loaded.models.item_embeddings is not None
    assert torch.equal(loaded.models.item_embeddings, item_embeddings(5))
    assert loaded.user_context_dim == 2
    assert loaded.trend_half_life_ms == 3 * DAY
    assert loaded.config.n_candidates == 3
    assert loaded.categories is not None and loaded.categories.tolist()[:4] == [0, 0, 0, 1]
    assert loaded.models.din is not None and not loaded.models.din.training


def test_a_folder_without_exported_embeddings_serves_layer_zero(tmp_path: Path) -> None:
    loaded = _loaded(tmp_path, TinySet(seed=5, export_embeddings=False))
    assert loaded.models.item_embeddings is not None
    assert loaded.models.item_embeddings.shape == (len(ITEMS), 8)


@pytest.mark.parametrize("broken", ["din", "ranknet"])
def test_a_broken_stage_is_left_out(tmp_path: Path, broken: str) -> None:
    loaded = _loaded(tmp_path, TinySet(seed=5, break_stage=broken))
    assert loaded.stages[broken] is False and broken in loaded.stage_errors
    assert loaded.stages["lightgcn"] is True


def test_a_set_without_a_vocabulary_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SetLoadError, match="no items"):
        _loaded(tmp_path, TinySet(seed=5, break_stage="lightgcn"))


def _stats() -> dict[str, ItemStats]:
    return {
        "a": ItemStats(interaction_count=5, last_event_time=NINETY_EIGHT, trend_score=4.0),
        "b": ItemStats(
            interaction_count=2,
            click_count=3,
            last_event_time=NINETY_EIGHT - 2 * DAY,
            trend_score=2.0,
        ),
        "not-in-vocab": ItemStats(interaction_count=1, last_event_time=NINETY_EIGHT + DAY),
    }


def test_now_is_the_stream_event_time_not_the_wall_clock() -> None:
    items = ItemFeatures.build(ITEMS, _stats())
    # Every item the store knows sets the clock, in the vocabulary or not.
    assert items.latest_event_time == NINETY_EIGHT + DAY
    assert items.with_stats == 2
    assert user_now(None, items) == NINETY_EIGHT + DAY
    # A user's own later event (a live event on a replayed stack) does not move "now".
    later = RecentItems(("a",), (NINETY_EIGHT + 3 * DAY,), 4, NINETY_EIGHT + 3 * DAY)
    assert user_now(later, items) == NINETY_EIGHT + DAY

    now = NINETY_EIGHT + DAY
    table = items.table(now, half_life_ms=DAY, categories=None)
    a, b = ITEMS.index("a"), ITEMS.index("b")
    # a: 4 interactions decayed over one half-life -> log1p(2); b: 2 over three -> log1p(.25)
    assert table.popularity[a].item() == pytest.approx(torch.log1p(torch.tensor(2.0)).item())
    assert table.popularity[b].item() == pytest.approx(torch.log1p(torch.tensor(0.25)).item())
    assert table.recency[a].item() == pytest.approx(0.5)
    assert table.recency[b].item() == pytest.approx(0.25)
    assert table.ctr[b].item() == pytest.approx(4 / 20)
    unseen = ITEMS.index("m0")
    assert table.popularity[unseen] == 0 and table.recency[unseen] == 0


def test_request_inputs_from_the_user_features(tmp_path: Path) -> None:
    loaded = _loaded(tmp_path)
    recent = RecentItems(
        ("c", "gone", "a"), (NINETY_EIGHT, NINETY_EIGHT - 1, NINETY_EIGHT - 2), 40, NINETY_EIGHT
    )
    request = build_request(loaded, "u3", recent, 4, now_ms=NINETY_EIGHT + DAY)
    assert request.recent_items.tolist() == [ITEMS.index("c"), ITEMS.index("a")]
    assert sorted(request.seen_items.tolist()) == sorted([ITEMS.index("c"), ITEMS.index("a")])
    assert request.user_index == USERS.index("u3") and request.k == 4
    expected = context.user_context(
        torch.tensor(40), torch.tensor(NINETY_EIGHT), NINETY_EIGHT + DAY
    )
    assert torch.allclose(request.user_context, expected)
    # Older items the user has (the seen set) are excluded too, unknown ones ignored.
    had = RecentItems(recent.items, recent.times, 40, NINETY_EIGHT, frozenset({"b", "c", "gone"}))
    with_seen = build_request(loaded, "u3", had, 4, now_ms=NINETY_EIGHT + DAY)
    assert with_seen.recent_items.tolist() == request.recent_items.tolist()
    assert sorted(with_seen.seen_items.tolist()) == sorted(ITEMS.index(i) for i in "abc")
    stranger = build_request(loaded, "stranger", None, 4, now_ms=NINETY_EIGHT)
    assert stranger.user_index is None and stranger.recent_items.numel() == 0
    assert stranger.user_context.tolist() == [0.0, 0.0]


def test_serving_names_sources_and_reasons(tmp_path: Path) -> None:
    loaded = _loaded(tmp_path)
    serving = ServingSet(loaded, ItemFeatures.build(ITEMS, _stats()))
    recent = RecentItems(("p",), (NINETY_EIGHT,), 1, NINETY_EIGHT)
    answer = serve(serving, "u1", recent, 3, {"p": "Psycho"})
    assert answer.model_version == "cascade-test"
    assert answer.sources == {"recall": "lightgcn", "rank": "din", "rerank": "ranknet"}
    assert "q" in {pick.item_id for pick in answer.picks}
    assert {pick.reason for pick in answer.picks} == {"because you interacted with Psycho"}
    has_q = RecentItems(("p",), (NINETY_EIGHT,), 2, NINETY_EIGHT, frozenset({"q"}))
    assert "q" not in {pick.item_id for pick in serve(serving, "u1", has_q, 3, {}).picks}
    cold = serve(serving, "stranger", None, 3, {})
    assert cold.model_version == "cascade-test+recall:popularity"
    # Recall by popularity at the stream's now: the two items the store knows lead.
    assert {"a", "b"} <= {pick.item_id for pick in cold.picks}


def test_the_sets_item_prior_is_loaded_and_answers_a_user_without_history(
    tmp_path: Path,
) -> None:
    prior = torch.zeros(len(ITEMS))
    prior[ITEMS.index("m5")] = 2.0
    # Without DIN the recall order stands, so the prior's top item must come first.
    loaded = _loaded(tmp_path, TinySet(seed=5, item_prior=prior, break_stage="din"))
    assert loaded.models.item_prior is not None
    assert torch.equal(loaded.models.item_prior, prior)
    stats = {item: ItemStats(trend_score=1.0, last_event_time=NINETY_EIGHT) for item in ITEMS}
    serving = ServingSet(loaded, ItemFeatures.build(loaded.item_ids, stats))
    answer = serve(serving, "someone-new", None, 1, {})
    assert answer.sources["recall"] == "cold_start"
    assert [pick.item_id for pick in answer.picks] == ["m5"]
    assert "+recall:cold_start" in answer.model_version


def test_an_item_prior_of_the_wrong_size_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SetLoadError, match="item_prior"):
        _loaded(tmp_path, TinySet(seed=5, item_prior=torch.zeros(len(ITEMS) + 1)))


def test_the_clock_is_not_moved_by_a_few_items() -> None:
    replayed = [NINETY_EIGHT - n * 60_000 for n in range(1000)]
    assert stream_clock(replayed) == replayed[0]  # a healthy stream: its newest event
    # One user's burst of live events, 28 years later, on a dozen of the items: the clock
    # stays at the replayed log's newest event.
    live = [NINETY_EIGHT + 28 * 365 * DAY] * 12
    assert stream_clock(live + replayed[12:]) == replayed[12]
    # Fewer than CLOCK_RANK items more than CLOCK_GAP_MS ahead cannot move it at all.
    ahead = [NINETY_EIGHT + 5 * DAY] * (CLOCK_RANK - 1)
    assert stream_clock(ahead + replayed) == NINETY_EIGHT
    # A small table: the newest tenth anchors it; empty tables read 0.
    assert stream_clock([5, 4, 3, 2, 1, 0, 0]) == 5
    assert stream_clock([NINETY_EIGHT + 3 * DAY] + [NINETY_EIGHT] * 19) == NINETY_EIGHT
    assert stream_clock([]) == stream_clock([0, 0]) == 0


@pytest.mark.parametrize("seed", range(30))
def test_the_clock_sorts_only_its_anchor_and_reads_as_the_full_sort(seed: int) -> None:
    """The definition on a full sort, against ``stream_clock`` on lists and arrays with
    gaps, bursts ahead, zeros and repeated times."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 3000))
    times = NINETY_EIGHT - rng.integers(0, 40, n) * (CLOCK_GAP_MS // int(rng.integers(1, 8)))
    times[rng.random(n) < 0.2] = 0
    times[rng.random(n) < 0.01] += 30 * DAY

    seen = sorted((int(t) for t in times if t > 0), reverse=True)
    expected = 0
    if seen:
        position = max(1, min(CLOCK_RANK, len(seen) // 10)) - 1
        while position > 0 and seen[position - 1] - seen[position] <= CLOCK_GAP_MS:
            position -= 1
        expected = seen[position]
    assert stream_clock(times) == stream_clock([int(t) for t in times]) == expected


def test_one_users_live_burst_leaves_another_users_list_in_order() -> None:
    """A replayed 1998 catalogue, then 12 live events (wall clock, 2026) by one user: another
    user's list keeps its order apart from the items the burst touched."""
    from models.cascade import CascadeConfig, CascadeModels
    from streams.folding import TREND_HALF_LIFE_MS

    n = 600
    item_ids = tuple(f"m{i}" for i in range(n))
    rng = torch.Generator().manual_seed(0)
    trend = torch.rand(n, generator=rng) * 50
    stats = {
        item: ItemStats(
            interaction_count=int(trend[i]) + 1,
            last_event_time=NINETY_EIGHT - int(torch.randint(0, 30, (1,), generator=rng)) * DAY,
            trend_score=float(trend[i]),
        )
        for i, item in enumerate(item_ids)
    }
    # Popularity alone orders the list (no embeddings): the features the clock ages decide.
    loaded = LoadedCascade(
        label="pop",
        set_id="pop",
        models=CascadeModels(),
        config=CascadeConfig(n_candidates=100, rerank_depth=50),
        item_ids=item_ids,
        item_index={item: i for i, item in enumerate(item_ids)},
        user_index={},
        trend_half_life_ms=TREND_HALF_LIFE_MS,
        categories=None,
        user_context_dim=0,
    )
    other = RecentItems(("m1",), (NINETY_EIGHT - 5 * DAY,), 1, NINETY_EIGHT - 5 * DAY)

    def top(items: ItemFeatures) -> list[str]:
        answer = serve(ServingSet(loaded, items), "943", other, 10, {})
        return [pick.item_id for pick in answer.picks]

    before = top(ItemFeatures.build(item_ids, stats))
    live = NINETY_EIGHT + 28 * 365 * DAY
    touched = [f"m{i}" for i in range(300, 312)]
    for item in touched:
        old = stats[item]
        stats[item] = ItemStats(
            interaction_count=old.interaction_count + 1,
            last_event_time=live,
            trend_score=old.trend_score * 2.0 ** (-(live - (old.last_event_time or 0)) / DAY) + 1.0,
        )
    after_items = ItemFeatures.build(item_ids, stats)
    assert after_items.latest_event_time < NINETY_EIGHT + DAY  # the clock stayed in 1998
    after = top(after_items)
    # The touched items move (the worker folded their 28-year jump into their trend); every
    # other item keeps its place in line: what was shown still comes first, in order.
    kept = [item for item in before if item not in touched]
    assert [item for item in after if item not in touched][: len(kept)] == kept


def test_covisits_from_the_store_become_the_table_and_the_reason(tmp_path: Path) -> None:
    loaded = _loaded(tmp_path)
    stats = _stats()
    # "a" was watched together with "m3" (kept neighbours heaviest first; "gone" is not in
    # the vocabulary and is skipped), and "m3" with "a".
    stats["a"] = ItemStats(
        interaction_count=4,
        last_event_time=NINETY_EIGHT,
        covisit_items=("m3", "gone"),
        covisit_weights=(3, 1),
        covisit_total=4,
    )
    stats["m3"] = ItemStats(covisit_items=("a",), covisit_weights=(3,), covisit_total=3)
    items = ItemFeatures.build(ITEMS, stats)
    assert items.covisits is not None
    a, m3 = ITEMS.index("a"), ITEMS.index("m3")
    assert items.covisits.neighbours[a].tolist()[:2] == [m3, -1]
    assert items.covisits.weights[a].tolist()[:2] == [3.0, 0.0]
    assert items.covisits.totals[a].item() == 4.0
    assert ItemFeatures.build(ITEMS, _stats()).covisits is None  # no item has any

    config = dataclasses.replace(loaded.config, covisit_candidates=1, covisit_weight=10.0)
    serving = ServingSet(dataclasses.replace(loaded, config=config), items)
    recent = RecentItems(("a",), (NINETY_EIGHT,), 1, NINETY_EIGHT)
    answer = serve(serving, "u1", recent, 3, {"a": "Alien"})
    assert answer.picks[0].item_id == "m3"
    assert answer.picks[0].reason == "because you interacted with Alien"


def _same_features(a: ItemFeatures, b: ItemFeatures) -> bool:
    tensors = ("trend_score", "last_event_time", "clicks", "impressions")
    if any(not torch.equal(getattr(a, name), getattr(b, name)) for name in tensors):
        return False
    if (a.covisits is None) != (b.covisits is None):
        return False
    if (
        a.covisits is not None
        and b.covisits is not None
        and not all(
            torch.equal(getattr(a.covisits, name), getattr(b.covisits, name))
            for name in ("neighbours", "weights", "totals")
        )
    ):
        return False
    return (a.latest_event_time, a.with_stats) == (b.latest_event_time, b.with_stats)


def test_a_refresh_rebuilds_only_the_rows_that_changed() -> None:
    stats = _stats()
    stats["a"] = ItemStats(
        interaction_count=4,
        last_event_time=NINETY_EIGHT,
        covisit_items=("m3",),
        covisit_weights=(3,),
        covisit_total=3,
    )
    first = ItemFeatures.build(ITEMS, stats)
    # Nothing changed (the reader hands back the same row objects): the same features.
    assert ItemFeatures.build(ITEMS, dict(stats), previous=first) is first
    # Equal values in new objects count as changed, and give the same features.
    copied = {item: dataclasses.replace(row) for item, row in stats.items()}
    assert _same_features(ItemFeatures.build(ITEMS, copied, previous=first), first)
    # One row changed: exactly what a full build gives, and the previous is left as it was.
    before = first.covisits.neighbours.clone() if first.covisits is not None else None
    stats["m3"] = ItemStats(
        interaction_count=2,
        click_count=1,
        last_event_time=NINETY_EIGHT + DAY,
        covisit_items=("a", "b"),
        covisit_weights=(3, 1),
        covisit_total=4,
    )
    stats["a"] = ItemStats(interaction_count=5, last_event_time=NINETY_EIGHT)  # lost its row
    updated = ItemFeatures.build(ITEMS, stats, previous=first)
    assert _same_features(updated, ItemFeatures.build(ITEMS, stats))
    assert first.covisits is not None and torch.equal(first.covisits.neighbours, before)
    m3 = ITEMS.index("m3")
    assert updated.covisits is not None
    assert updated.covisits.neighbours[m3].tolist()[:3] == [ITEMS.index("a"), 1, -1]
    # A vocabulary of another length is built afresh.
    assert _same_features(
        ItemFeatures.build(ITEMS[:-1], stats, previous=first), ItemFeatures.build(ITEMS[:-1], stats)
    )


def test_the_item_table_is_computed_once_per_now() -> None:
    items = ItemFeatures.build(ITEMS, _stats())
    now = items.latest_event_time
    table = items.table(now, 3 * DAY, None)
    assert items.table(now, 3 * DAY, None) is table
    later = items.table(now + DAY, 3 * DAY, None)
    assert later is not table
    assert torch.equal(later.popularity, items._table(now + DAY, 3 * DAY, None).popularity)
    categories = torch.zeros(len(ITEMS), dtype=torch.long)
    assert items.table(now + DAY, 3 * DAY, categories).categories is categories
    # A changed copy never reads the original's table.
    doubled = dataclasses.replace(items, trend_score=items.trend_score * 2)
    assert not torch.equal(
        doubled.table(now + DAY, 3 * DAY, None).popularity,
        items.table(now + DAY, 3 * DAY, None).popularity,
    )


def test_ranknet_and_sasrec_are_served_as_traces_that_score_as_the_eager_models(
    tmp_path: Path,
) -> None:
    loaded = _loaded(tmp_path)
    folders = {s: read_folder(f) for s, f in stage_folders(TinySet(seed=5), tmp_path / "e").items()}
    ranknet, sasrec = loaded.models.ranknet, loaded.models.sasrec
    assert isinstance(ranknet.mlp, torch.jit.ScriptModule)
    assert sasrec._traced_forward is not None
    eager_ranknet = RankNet(config_from(RankNetConfig, folders["ranknet"].config.get("model")))
    eager_ranknet.load_state_dict(folders["ranknet"].state_dict)
    eager_sasrec = Sasrec(len(ITEMS), config_from(SasrecConfig, folders["sasrec"].config["model"]))
    eager_sasrec.load_state_dict(folders["sasrec"].state_dict)
    # the same weights under the same names: what the registry holds is what is served
    assert ranknet.state_dict().keys() == eager_ranknet.state_dict().keys()
    assert sasrec.state_dict().keys() == eager_sasrec.state_dict().keys()
    torch.manual_seed(0)
    with torch.inference_mode():
        for n in (1, 3, 17):  # any number of candidates
            features = torch.randn(n, ranknet.config.n_features)
            torch.testing.assert_close(ranknet(features), eager_ranknet.eval()(features))
        for length in (1, 2, 5, 9):  # shorter than, as long as and longer than max_length
            history = torch.randint(0, len(ITEMS), (length,))
            torch.testing.assert_close(
                sasrec.next_logits(history), eager_sasrec.next_logits(history)
            )
    assert not ranknet.training and not sasrec.training
    # the greedy placement's arrays are the loaded weights
    assert ranknet.frozen is not None
    for (weight, bias), layer in zip(
        ranknet.frozen.layers,
        [m for m in eager_ranknet.mlp.modules() if isinstance(m, torch.nn.Linear)],
        strict=True,
    ):
        assert (weight == layer.weight.detach().numpy()).all()
        assert (bias == layer.bias.detach().numpy()).all()
