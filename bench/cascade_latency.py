"""The cascade's model compute per request: float32 against dynamic int8, 1 and 2 threads,
and eager against the TorchScript traces the API serves.

    .venv/bin/python bench/cascade_latency.py [--requests 500] [--k 10]

MovieLens-100K sized models (943 users, 1682 items, dim 64), 50 recent items per user,
the cascade configuration training registers (`training.fit.hyper.trained_cascade`: recall of
200 candidates with the item prior and the trend channel, DIN over all of them in one
pass, RankNet placing k of DIN's top 200 greedily, the co-visitation channel over a full
table of random neighbours), plus the diversity rule, and the co-visitation channel's
cost as the ratio of the same requests with and without it. LightGCN and
RankNet weights are random (latency does not depend on them); DIN is first fitted for a
few seconds to a synthetic genre rule so that its logits spread like a trained model's,
which is what makes the int8-vs-float32 score difference meaningful. Only model compute
is timed: no feature reads, no HTTP.

The last comparisons add a SASRec (random weights, the default configuration) and time
the full cascade with SASRec and RankNet eager against the same models traced as
``serving.loading`` serves them (``trace_for_serving``), alternating, in one run, and
checks that both place the same lists; then the final placement (``models.cascade.place``)
of the same shortlists with RankNet's weights as arrays (``place_greedily``, as served)
against the torch loop (``greedy_rerank``), and the full cascade both ways.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

import torch
from torch import nn

from bench.stats import percentile
from models.cascade import (
    CascadeConfig,
    CascadeModels,
    CascadeRequest,
    Covisits,
    ItemTable,
    Shortlist,
    din_context,
    place,
    rank,
    recall,
    recommend,
    shortlist,
)
from models.din import DIN, DINConfig
from models.lightgcn import LightGCN, LightGCNConfig, normalized_adjacency
from models.ranknet import RankNet, RankNetConfig
from models.sasrec import Sasrec, SasrecConfig
from streams.folding import COVISIT_KEEP
from training.fit.hyper import trained_cascade

N_USERS, N_ITEMS, DIM, HISTORY, N_GENRES = 943, 1682, 64, 50, 19  # MovieLens-100K


def build_models(
    seed: int, n_users: int = N_USERS, n_items: int = N_ITEMS
) -> tuple[CascadeModels, ItemTable]:
    torch.manual_seed(seed)
    users = torch.randint(0, n_users, (100_000,))
    items = torch.randint(0, n_items, (100_000,))
    adj = normalized_adjacency(users, items, n_users, n_items)
    user_emb, item_emb = LightGCN(LightGCNConfig(n_users, n_items, dim=DIM)).export_embeddings(adj)
    genres = torch.randint(0, N_GENRES, (n_items,))
    din_config = DINConfig(n_items=n_items, item_dim=DIM, n_categories=N_GENRES, context_dim=4)
    din = DIN(din_config, item_categories=genres).eval()
    ranknet = RankNet(RankNetConfig()).eval()
    table = ItemTable(
        popularity=torch.log1p(torch.bincount(items, minlength=n_items).float()),
        recency=torch.rand(n_items),
        ctr=torch.rand(n_items) * 0.1,
        categories=genres,
    )
    prior = torch.log1p(torch.bincount(items[:20_000], minlength=n_items).float())
    weights = torch.rand(n_items, COVISIT_KEEP).sort(dim=1, descending=True).values
    table.covisits = Covisits(  # every item with a full neighbour list: the worst case
        neighbours=torch.randint(0, n_items, (n_items, COVISIT_KEEP)),
        weights=weights,
        totals=weights.sum(1) * 2,
    )
    return CascadeModels(user_emb, item_emb, din, ranknet, item_prior=prior), table


def fit_din(din: DIN, table: ItemTable, steps: int, seed: int) -> None:
    """A synthetic rule: a candidate is clicked when 4+ of the 50 recent items share its genre."""
    assert table.categories is not None
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(din.parameters(), lr=1e-2)
    din.train()
    for _ in range(steps):
        history = torch.randint(0, N_ITEMS, (128, HISTORY), generator=generator)  # (B, L)
        candidates = torch.randint(0, N_ITEMS, (128,), generator=generator)  # (B,)
        same = table.categories[history] == table.categories[candidates].unsqueeze(1)  # (B, L)
        labels = (same.sum(1) >= 4).float()
        context = torch.cat([table.context(candidates), torch.rand(128, 1)], -1)  # (B, 4)
        mask = torch.ones(128, HISTORY, dtype=torch.bool)
        logits, _ = din(candidates, history, mask, context)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    din.eval()


def quantized(models: CascadeModels) -> CascadeModels:
    with warnings.catch_warnings():  # torch.ao.quantization announces its own deprecation
        warnings.simplefilter("ignore")
        din = torch.ao.quantization.quantize_dynamic(models.din, {nn.Linear}, dtype=torch.qint8)
        ranknet = torch.ao.quantization.quantize_dynamic(
            models.ranknet, {nn.Linear}, dtype=torch.qint8
        )
    return CascadeModels(models.user_embeddings, models.item_embeddings, din, ranknet)


def make_requests(
    n: int, k: int, seed: int, n_users: int = N_USERS, n_items: int = N_ITEMS
) -> list[CascadeRequest]:
    generator = torch.Generator().manual_seed(seed)
    requests = []
    for _ in range(n):
        touched = torch.randperm(n_items, generator=generator)[: 2 * HISTORY]
        requests.append(
            CascadeRequest(
                recent_items=touched[:HISTORY],
                seen_items=touched,
                user_index=int(torch.randint(0, n_users, (1,), generator=generator)),
                user_context=torch.rand(1, generator=generator),
                k=k,
            )
        )
    return requests


T = TypeVar("T")


def time_calls(call: Callable[[T], object], requests: list[T]) -> list[float]:
    for request in requests[:50]:  # warm-up: allocator, kernels, lazy init
        call(request)
    samples = []
    for request in requests:
        start = time.perf_counter()
        call(request)
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def full_cascade(
    models: CascadeModels, table: ItemTable, config: CascadeConfig
) -> Callable[[CascadeRequest], object]:
    return lambda request: recommend(models, table, request, config)


def up_to_rank(
    models: CascadeModels, table: ItemTable, config: CascadeConfig
) -> Callable[[CascadeRequest], object]:
    """Recall and DIN only: the full request minus re-rank and rules."""

    @torch.inference_mode()
    def call(request: CascadeRequest) -> None:
        candidates, scores, _, _ = recall(models, table, request, config)
        context = din_context(table, candidates, request.user_context)
        rank(models.din, candidates, request.recent_items, context, scores)

    return call


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ranks_a = a.argsort().argsort().float()
    ranks_b = b.argsort().argsort().float()
    return float(torch.corrcoef(torch.stack([ranks_a, ranks_b]))[0, 1])


def din_logits(models: CascadeModels, table: ItemTable, request: CascadeRequest) -> torch.Tensor:
    assert models.din is not None and models.item_embeddings is not None
    candidates = torch.arange(200)
    context = torch.cat([table.context(candidates), request.user_context.expand(200, 1)], -1)
    mask = torch.ones(HISTORY, dtype=torch.bool)
    with torch.inference_mode():
        logits, _ = models.din.score_candidates(candidates, request.recent_items, mask, context)
    return logits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--din-steps", type=int, default=300, help="DIN fitting steps")
    args = parser.parse_args()

    fp32, table = build_models(seed=0)
    assert fp32.din is not None
    fit_din(fp32.din, table, args.din_steps, seed=2)
    int8 = quantized(fp32)
    config = replace(trained_cascade(), max_per_category=3)
    requests = make_requests(args.requests, args.k, seed=1)

    print(
        f"cascade model compute per request, k={args.k} from 200 candidates, "
        f"{N_USERS} users x {N_ITEMS} items, dim {DIM}, history {HISTORY}, n={args.requests}"
    )
    print(f"{'variant':<14}{'threads':>8}{'median ms':>11}{'p95 ms':>9}{'p99 ms':>9}")
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for name, models in (("float32", fp32), ("int8 dynamic", int8)):
            samples = time_calls(full_cascade(models, table, config), requests)
            print(
                f"{name:<14}{threads:>8}{statistics.median(samples):>11.2f}"
                f"{percentile(samples, 95):>9.2f}{percentile(samples, 99):>9.2f}"
            )

    torch.set_num_threads(1)
    stages = {
        "recall": lambda r: recall(fp32, table, r, config),
        "recall + DIN": up_to_rank(fp32, table, config),
        "full cascade": full_cascade(fp32, table, config),
    }
    print("float32, 1 thread, cumulative by stage (re-rank + rules = full - recall + DIN):")
    for name, call in stages.items():
        samples = time_calls(call, requests)
        print(f"  {name:<14} median {statistics.median(samples):.2f} ms")

    # The co-visitation channel's cost: the same requests without it, in the same run.
    plain = replace(config, covisit_candidates=0, covisit_weight=0.0)
    without = statistics.median(time_calls(full_cascade(fp32, table, plain), requests))
    with_it = statistics.median(time_calls(full_cascade(fp32, table, config), requests))
    print(
        f"co-visitation channel ({COVISIT_KEEP} neighbours per item, history "
        f"{config.covisit_history}): median {without:.2f} ms without, {with_it:.2f} ms with, "
        f"ratio {with_it / without:.2f}"
    )

    eager_vs_traced(fp32, table, config, requests)
    arrays_vs_torch(fp32, table, config, requests)

    diffs, spreads, correlations, overlaps = [], [], [], []
    for request in requests[:100]:
        a, b = din_logits(fp32, table, request), din_logits(int8, table, request)
        diffs.append(float((a - b).abs().max()))
        spreads.append(float(a.std()))
        correlations.append(spearman(a, b))
        top_a = recommend(fp32, table, request, config).items
        top_b = recommend(int8, table, request, config).items
        overlaps.append(len(set(top_a.tolist()) & set(top_b.tolist())) / max(len(top_a), 1))
    print(
        f"int8 vs float32 on 100 requests: DIN logit max |diff| median "
        f"{statistics.median(diffs):.4f} (logit std across candidates "
        f"{statistics.median(spreads):.4f}), Spearman of the 200 logits median "
        f"{statistics.median(correlations):.4f}; final top-{args.k} overlap mean "
        f"{statistics.mean(overlaps):.3f}"
    )


V = TypeVar("V")


def with_sasrec(models: CascadeModels, n_items: int = N_ITEMS) -> CascadeModels:
    """``models`` plus a SASRec (random weights, the default configuration, seed 3) and a
    RankNet of its own, both eager."""
    torch.manual_seed(3)
    return replace(
        models,
        sasrec=Sasrec(n_items, SasrecConfig()).eval(),
        ranknet=copy.deepcopy(models.ranknet),
    )


def traced(models: CascadeModels) -> CascadeModels:
    """A copy of ``models`` with SASRec and RankNet traced as ``serving.loading`` does."""
    copied = copy.deepcopy(models)
    assert copied.sasrec is not None and copied.ranknet is not None
    copied.sasrec.trace_for_serving()
    copied.ranknet.trace_for_serving()
    return copied


def alternating(
    variants: dict[str, V], measure: Callable[[V], float], rounds: int
) -> dict[str, list[float]]:
    """``measure`` of each variant, the variants in turn, ``rounds`` times."""
    results: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, variant in variants.items():
            results[name].append(measure(variant))
    return results


def compared(what: str, medians: dict[str, list[float]]) -> str:
    """One line: each variant's medians in round order, and the last's ratio to the first."""
    (first, base), (last, other) = list(medians.items())[0], list(medians.items())[-1]
    rounds = ", ".join(
        f"{name} {', '.join(f'{m:.2f}' for m in values)} ms" for name, values in medians.items()
    )
    ratio = statistics.median(other) / statistics.median(base)
    return (
        f"{what}, {len(base)} alternating rounds (medians): {rounds} ({last}/{first} {ratio:.2f})"
    )


def eager_vs_traced(
    models: CascadeModels,
    table: ItemTable,
    config: CascadeConfig,
    requests: list[CascadeRequest],
    rounds: int = 3,
) -> None:
    """The full cascade with SASRec, eager against traced SASRec and RankNet."""
    eager = with_sasrec(models)
    variants = {"eager": eager, "traced SASRec + RankNet": traced(eager)}
    medians = alternating(
        variants,
        lambda v: statistics.median(time_calls(full_cascade(v, table, config), requests)),
        rounds,
    )
    same = sum(
        torch.equal(
            recommend(eager, table, request, config).items,
            recommend(variants["traced SASRec + RankNet"], table, request, config).items,
        )
        for request in requests[:100]
    )
    print(f"{compared('with SASRec, 1 thread', medians)}; the same list for {same} of 100 requests")


def placing(models: CascadeModels, config: CascadeConfig) -> Callable[[Shortlist], object]:
    return lambda short: place(models, short, config, 10)


def arrays_vs_torch(
    models: CascadeModels,
    table: ItemTable,
    config: CascadeConfig,
    requests: list[CascadeRequest],
    rounds: int = 3,
) -> None:
    """The greedy placement on arrays (as served) against the torch loop, on the same
    shortlists, then the whole cascade both ways; SASRec and RankNet traced in both."""
    eager = with_sasrec(models)
    loop = traced(eager)
    # As serving.loading does: the arrays are taken before the trace.
    assert eager.ranknet is not None
    eager.ranknet.freeze_for_placement()
    arrays = traced(eager)
    variants = {"torch loop": loop, "arrays": arrays}
    shortlists = [s for s in (shortlist(loop, table, r, config) for r in requests) if s]
    placements = alternating(
        variants,
        lambda v: statistics.median(time_calls(placing(v, config), shortlists)),
        rounds,
    )
    cascades = alternating(
        variants,
        lambda v: statistics.median(time_calls(full_cascade(v, table, config), requests)),
        rounds,
    )
    same = sum(
        torch.equal(place(loop, s, config, 10)[0], place(arrays, s, config, 10)[0])
        for s in shortlists
    )
    print(compared("placement", placements))
    print(compared("full cascade", cascades))
    print(f"the same placement for {same} of {len(shortlists)} shortlists")


if __name__ == "__main__":
    main()
