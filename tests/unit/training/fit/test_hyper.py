"""Typed hyper-parameters: one default each, overrides validated before any work."""

from __future__ import annotations

import pytest

from models.din import DINConfig
from models.lightgcn import LightGCNConfig
from models.ranknet import RankNetConfig
from training.fit.hyper import Hyper


def test_shapes_default_to_the_models_own_configs() -> None:
    hyper = Hyper()
    assert (hyper.lightgcn.dim, hyper.lightgcn.layers) == (
        LightGCNConfig.dim,
        LightGCNConfig.layers,
    )
    din = DINConfig(n_items=1)
    assert (hyper.din.item_dim, hyper.din.mlp_hidden) == (din.item_dim, din.mlp_hidden)
    assert hyper.ranknet.hidden == RankNetConfig.hidden


def test_overrides_apply_and_round_trip_through_json() -> None:
    hyper = Hyper.read({"din": {"epochs": 1}, "cascade": {"rerank_depth": 30}})
    assert hyper.din.epochs == 1 and hyper.din.lr == Hyper().din.lr
    assert hyper.cascade.rerank_depth == 30
    assert Hyper.read(hyper.as_dict()) == hyper
    assert Hyper.read(hyper) is hyper


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lightgcnn": {}}, "unknown hyper-parameter 'lightgcnn'"),
        ({"din": {"epocs": 1}}, "unknown hyper-parameter 'epocs' in 'din'"),
        ({"din": 3}, "must be an object"),
        ({"din": {"lr": -1}}, "bad hyper-parameters"),
        ({"lightgcn": {"recency_mix": 1.5}}, "bad hyper-parameters"),
        ({"din": {"activation": "relu"}}, "bad hyper-parameters"),
        ({"ranknet": {"epochs": "many"}}, "bad hyper-parameters"),
    ],
)
def test_bad_overrides_are_refused_with_what_is_wrong(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Hyper.read(overrides)
