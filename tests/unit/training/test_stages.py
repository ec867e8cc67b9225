"""training.fit.stages on a small synthetic log: point-in-time sets, the four loops, DDP."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from models.context import DAY_MS
from training.fit.hyper import Hyper
from training.fit.stages import (
    Parallel,
    TrainingData,
    evaluate_set,
    item_prior,
    prepare,
    train_all,
)

T0 = 1_577_836_800_000
SMALL: dict[str, Any] = {
    "lightgcn": {"epochs": 3, "batch_size": 256, "dim": 16, "layers": 2},
    "din": {"epochs": 1, "batch_size": 256, "item_dim": 8, "mlp_hidden": [16]},
    "ranknet": {"epochs": 3, "batch_size": 8},
    "sasrec": {"hidden": 16, "blocks": 1, "epochs": 3, "patience": 2, "batch_size": 32},
    "cascade": {"n_candidates": 20, "rerank_depth": 10, "sasrec_candidates": 5},
}


def synthetic_log(seed: int = 0, users: int = 40, items: int = 30, days: int = 60) -> pd.DataFrame:
    """Two taste groups (even / odd items) and a drift: items get popular in turn."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in range(users * 15):
        day = n / (users * 15) * days
        user = int(rng.integers(users))
        hot = int(day / days * items)  # the currently trending item
        if rng.random() < 0.3:
            item = (hot + int(rng.integers(3))) % items
        else:
            item = int(rng.integers(items // 2)) * 2 + user % 2
        rows.append((T0 + int(day * DAY_MS) + n, f"u{user}", f"i{item}"))
    frame = pd.DataFrame(rows, columns=["event_time", "user_id", "item_id"])
    frame["event_id"] = [f"e{n}" for n in range(len(frame))]
    frame["action"] = "view"
    frame["rating"] = np.nan
    return frame


def catalogue(items: int = 30) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": [f"i{n}" for n in range(items)],
            "title": [f"title {n}" for n in range(items)],
            "categories": [["even"] if n % 2 == 0 else ["odd"] for n in range(items)],
        }
    )


@pytest.fixture(scope="module")
def data() -> TrainingData:
    return prepare(synthetic_log(), catalogue())


def test_din_examples_are_point_in_time(data: TrainingData) -> None:
    log = synthetic_log()
    examples = data.din
    split = data.split
    positives = torch.nonzero(examples.label == 1).squeeze(1)
    for row in positives[[5, 100, 300]].tolist():
        user = split.user_ids[int(examples.user[row])]
        t = int(examples.time[row])
        earlier = log[(log.user_id == user) & (log.event_time < t)].sort_values("event_time")
        expected = [split.item_index[i] for i in earlier.item_id.iloc[::-1].head(20)]
        lookup = int(examples.lookup[row])
        got = examples.history[lookup][examples.history_mask[lookup]].tolist()
        assert got == expected
        # activity feature is log1p of the user's earlier events
        assert float(examples.context[row, 3]) == pytest.approx(np.log1p(len(earlier)), rel=1e-5)
    assert examples.label.sum() * 3 >= (examples.label == 0).sum() * 0.9
    assert int(examples.time.max()) < split.train_end_ms


def test_a_later_event_does_not_change_earlier_examples() -> None:
    log = synthetic_log()
    late = log.copy()
    extra = late.iloc[[0]].copy()
    extra["event_time"] = int(late["event_time"].max()) + 1
    extra["event_id"] = "late"
    before = prepare(log, None, tail_fraction=0.2)
    after = prepare(pd.concat([late, extra], ignore_index=True), None, tail_fraction=0.2)
    assert before.split.train_end_ms == after.split.train_end_ms
    assert torch.equal(before.din.context, after.din.context)
    assert torch.equal(before.din.history, after.din.history)


def test_train_all_is_deterministic_and_reports_every_epoch(data: TrainingData) -> None:
    seen: list[tuple[str, int]] = []
    first = train_all(data, SMALL, seed=3, on_epoch=lambda s, e, m: seen.append((s, e)))
    again = train_all(data, SMALL, seed=3)
    for name in ("lightgcn", "din", "ranknet", "sasrec"):
        a = getattr(first, name).state_dict()
        b = getattr(again, name).state_dict()
        assert all(torch.equal(a[key], b[key]) for key in a), name
    assert ("lightgcn", 2) in seen and ("din", 0) in seen and ("ranknet", 2) in seen
    # SASRec: the epoch count is chosen on the tail, then the whole period is fitted
    tail = first.history["sasrec_tail"]
    best = max(range(len(tail)), key=lambda n: tail[n]["validation_ndcg_at_10"])
    assert len(first.history["sasrec"]) == best + 1 == first.configs["sasrec"]["epochs"]
    assert ("sasrec_tail", 0) in seen and ("sasrec", 0) in seen
    assert [stage for stage, _ in seen].index("lightgcn") < [s for s, _ in seen].index("din")
    assert len(first.history["lightgcn"]) == 3 and "loss" in first.history["din"][0]
    json.dumps(first.configs)  # JSON-able, as streamrec.infra.model_store stores it
    assert first.configs["lightgcn"]["cascade"]["n_candidates"] == 20
    assert "trend_half_life_ms" in first.configs["lightgcn"]["features"]
    assert first.item_ids == list(data.split.item_ids)
    assert first.lightgcn.exported()[1].shape == (data.split.n_items, 16)


def test_evaluate_set_reports_every_stage(data: TrainingData) -> None:
    trained = train_all(data, SMALL, seed=0)
    result = evaluate_set(trained, data, "test")
    json.dumps(result)
    assert result["features_frozen_at_ms"] == data.split.train_end_ms
    # Recall@50+ need more than 30 candidates: the evaluation drops ks above n_items.
    for key in ("recall@10", "recall@20", "ndcg@10", "ndcg@20"):
        assert 0 <= result["lightgcn"][key] <= 1
    assert 0 <= result["din"]["auc"] <= 1 and "gauc" in result["din"]
    assert 0 <= result["lightgcn_embeddings"]["ndcg@10"] <= 1
    assert "delta_ndcg@10" in result["ranknet"] and "n_users" in result["ranknet"]
    cascade = result["cascade"]
    assert {"recall@10", "ndcg@10", "coverage@10", "popularity_bias@10"} <= set(cascade)
    assert set(cascade["slices"]) == {"new", "light", "heavy", "returning"}


def test_the_item_prior_counts_only_the_window_before_its_instant(data: TrainingData) -> None:
    split = data.split
    trained = train_all(data, SMALL, seed=0)
    days = Hyper().cascade.prior_days
    assert trained.item_prior is not None
    assert torch.equal(trained.item_prior, item_prior(split, split.train_end_ms, days))
    assert trained.cascade_models().item_prior is trained.item_prior
    # At the tail's start (what RankNet's lists are built with) no tail event may count.
    at_tail = item_prior(split, data.tail_start_ms, days)
    window = (split.train_time >= data.tail_start_ms - days * DAY_MS) & (
        split.train_time < data.tail_start_ms
    )
    by_hand = np.zeros(split.n_items)
    for item in range(split.n_items):
        by_hand[item] = len(set(split.train_user[window & (split.train_item == item)]))
    assert np.allclose(at_tail.numpy(), np.log1p(by_hand))
    assert not torch.equal(at_tail, trained.item_prior)  # the drifting log moved on


def test_sasrec_reads_tail_questions_folded_before_each_event(data: TrainingData) -> None:
    sequences = data.sequences
    assert sequences is not None and len(sequences.tail) > 0
    log = synthetic_log()
    split = data.split
    tail = log[(log["event_time"] >= data.tail_start_ms) & (log["event_time"] < split.train_end_ms)]
    by_user = log.sort_values("event_time", kind="stable").groupby("user_id")["item_id"]
    targets = {split.item_index[i] for i in tail["item_id"]}
    for history, seen, target in zip(
        sequences.tail.histories, sequences.tail.seen, sequences.tail.targets, strict=True
    ):
        assert int(target) in targets and int(target) not in seen
        assert set(history) <= set(seen) and len(history) <= sequences.max_length
    # a user's whole sequence is their training events in time order
    user, items = next(iter(by_user))
    whole = [split.item_index[i] for i in items if i in split.item_index]
    train_items = log[(log["user_id"] == user) & (log["event_time"] < split.train_end_ms)]
    assert whole[: len(train_items)] in sequences.whole


def test_the_set_with_sasrec_is_served_as_trained(data: TrainingData) -> None:
    from training.served_set import served_set

    trained = train_all(data, SMALL, seed=0)
    assert trained.sasrec is not None
    served = served_set(trained, data.split.n_train_users)
    assert served.stages["sasrec"] and "sasrec" not in served.stage_errors
    loaded = served.models.sasrec
    assert loaded is not None
    history = torch.tensor([3, 1, 4, 1, 5])
    assert torch.equal(loaded.next_logits(history), trained.sasrec.next_logits(history))
    assert served.config.sasrec_candidates == 5
    # a set trained without SASRec registers its folder empty and serves without it
    without = train_all(data, {**SMALL, "sasrec": {"epochs": 0}}, seed=0)
    assert without.sasrec is None
    bare = served_set(without, data.split.n_train_users)
    assert bare.models.sasrec is None and not bare.stages["sasrec"]


def test_bad_input_is_refused(data: TrainingData) -> None:
    with pytest.raises(ValueError, match="unknown hyper-parameter"):
        train_all(data, {"lightgcnn": {}}, seed=0)
    with pytest.raises(ValueError, match="unknown engine"):
        prepare(synthetic_log(), None, engine="spark")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rank(rank: int, world: int, port: int, data_path: str, out: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        data = torch.load(data_path, weights_only=False)
        trained = train_all(data, SMALL, seed=5, parallel=Parallel(rank, world))
        state = {
            f"{name}.{key}": value
            for name in ("lightgcn", "din", "ranknet", "sasrec")
            for key, value in getattr(trained, name).state_dict().items()
        }
        torch.save(state, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


# Two spawned interpreters import torch and train: ~1 min idle, several on a loaded machine.
@pytest.mark.timeout(900)
def test_two_ranks_end_with_identical_weights(data: TrainingData, tmp_path: Path) -> None:
    data_path = tmp_path / "data.pt"
    torch.save(data, data_path)
    mp.start_processes(
        _rank,
        args=(2, _free_port(), str(data_path), str(tmp_path)),
        nprocs=2,
        join=True,
        start_method="spawn",
    )
    first = torch.load(tmp_path / "rank0.pt")
    second = torch.load(tmp_path / "rank1.pt")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)
    # Each rank took half of every batch and DDP averaged the gradients: the mean of two
    # half-batch means is the full-batch mean, so LightGCN lands where one process does.
    single = train_all(data, SMALL, seed=5)
    assert torch.allclose(
        first["lightgcn.item_embeddings"], single.lightgcn.exported()[1], atol=1e-3
    )
