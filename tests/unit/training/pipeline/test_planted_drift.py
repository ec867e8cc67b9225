"""The live item-kNN recovers a planted switch of interest; frozen at the cutoff, it does not.

Synthetic users favour one category until a known time and another after it (the truth
from ``SyntheticSource.planted_switches``). The log is folded with the harness's state up
to a cutoff before every switch (frozen) and to the end (live); each switcher's top 10
from the kNN the harness scores (and the API serves) is read against its new category.
"""

from __future__ import annotations

import copy

import numpy as np
import pyarrow as pa
import pytest

from replay.loading import LoadStats
from replay.synthetic import DAY_MS, START_MS, SWITCH_WINDOW, SyntheticSource, parse_spec
from serving.knn import SERVED_PARAMS, KnnParams, category_incidence
from streams.events import Interaction
from training.evaluation.prequential_state import OnlineState, knn_arm

SPEC = "users=150,items=300,events=30000,seed=11,categories=6,switchers=0.4,session=5,drift=0"


@pytest.mark.parametrize("params", [KnnParams(), SERVED_PARAMS], ids=["plain", "served"])
def test_live_knn_recovers_the_planted_switch_and_frozen_does_not(params: KnnParams) -> None:
    spec = parse_spec(SPEC)
    source = SyntheticSource(spec)
    events = pa.concat_tables(source.batches(LoadStats())).to_pandas()
    truth = source.planted_switches()
    assert truth is not None
    switches = truth.to_pandas()
    cutoff = START_MS + int(SWITCH_WINDOW[0] * spec.days * DAY_MS) - DAY_MS
    assert (switches.switch_time > cutoff).all()

    item_ids = [f"i{n}" for n in range(spec.items)]
    names = [f"category-{c:02d}" for c in source.item_category]
    categories = category_incidence([[name] for name in names])
    live = OnlineState(item_ids, keep=50, recent_days=14, categories=categories)
    frozen: OnlineState | None = None
    for row in events.itertuples(index=False):
        if frozen is None and row.event_time >= cutoff:
            frozen = copy.deepcopy(live)
        live.fold(
            Interaction.model_construct(
                event_id=str(row.row),
                event_time=int(row.event_time),
                user_id=row.user_id,
                item_id=row.item_id,
                action=row.action,
            )
        )
    assert frozen is not None
    arm = knn_arm(10, params)
    last = int(events.event_time.max())
    live_share, frozen_share = [], []
    for row in switches.itertuples(index=False):
        after = events[(events.user_id == row.user_id) & (events.event_time >= row.switch_time)]
        if len(after) < 10 or row.switch_time > last:
            continue
        for state, shares in ((live, live_share), (frozen, frozen_share)):
            picks = arm(row.user_id, state)
            shares.append(np.mean([names[i] == row.to_category for i in picks]))
    assert len(live_share) >= 20
    live_mean, frozen_mean = np.mean(live_share), np.mean(frozen_share)
    print(f"new category in the top 10: live {live_mean:.2f}, frozen {frozen_mean:.2f}")
    assert np.mean(live_share) >= 0.6
    assert np.mean(frozen_share) <= 0.25
    assert np.mean(live_share) >= np.mean(frozen_share) + 0.4
