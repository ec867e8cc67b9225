"""`GET /recommend` served by a registered model set, against the heuristic; plus the model
compute alone, float32 against dynamic int8, and torch threads 1 against 2.

    .venv/bin/python -m bench.cascade_request [--requests 500] [--din-steps 300]

Starts its own worker and API on fresh topics with MovieLens-100K replayed
(bench/stack.py), measures `/recommend` at k=10 over HTTP while the heuristic serves,
then registers a MovieLens-100K-sized set (the models of bench/cascade_latency.py: random
LightGCN embeddings, DIN fitted to a synthetic genre rule so its scores spread like a
trained model's, a random RankNet; 200 candidates, re-rank depth 50, diversity rule on)
in the stack's MLflow registry, waits for the API to load it and measures again, one
client at a time and four at once. The in-process part runs the same set on real users'
recent items read from the online store.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

import httpx
import mlflow
import pyarrow.parquet as pq
import torch

from api.adapters.feast_features import FeastFeatureReader
from api.ports import RecentItems
from bench.cascade_latency import build_models, fit_din, quantized, time_calls
from bench.stack import running_stack
from bench.stats import percentile
from models.cascade import CascadeModels, CascadeRequest, ItemTable, recommend
from serving.cascade import ItemFeatures, build_request, user_now
from serving.loading import LoadedCascade, build_cascade
from streamrec.infra.feast_store import open_store
from streamrec.infra.model_store import ChampionSet, read_folder, write_folder
from streamrec.settings import Settings
from streams.folding import TREND_HALF_LIFE_MS
from training.fit.hyper import trained_cascade
from training.registry import configure, log_folder, register_set_and_gate

SOURCE = "movielens-100k"
# The trained default (training.fit.hyper.trained_cascade), with the diversity rule on.
CASCADE = replace(trained_cascade(), max_per_category=3)


def write_set(root: Path, users: list[str], items: list[str], din_steps: int) -> dict[str, Path]:
    models, table = build_models(seed=0)
    assert models.din is not None and models.ranknet is not None
    assert models.item_embeddings is not None and models.user_embeddings is not None
    assert table.categories is not None
    if (len(users), len(items)) != tuple(models.user_embeddings.shape[:1]) + tuple(
        models.item_embeddings.shape[:1]
    ):
        raise SystemExit(f"the log has {len(users)} users and {len(items)} items, not ML-100K's")
    fit_din(models.din, table, din_steps, seed=2)
    dim = models.item_embeddings.shape[1]
    return {
        "lightgcn": write_folder(
            root / "lightgcn",
            {"user_embeddings": models.user_embeddings, "item_embeddings": models.item_embeddings},
            {
                "model": {"n_users": len(users), "n_items": len(items), "dim": dim},
                "cascade": asdict(CASCADE),
                "features": {"trend_half_life_ms": TREND_HALF_LIFE_MS},
            },
            {"item_ids": items, "user_ids": users},
        ),
        "din": write_folder(
            root / "din",
            dict(models.din.state_dict()),
            {"model": asdict(models.din.config)},
            {"item_categories": table.categories.tolist()},
        ),
        "ranknet": write_folder(
            root / "ranknet",
            dict(models.ranknet.state_dict()),
            {"model": asdict(models.ranknet.config)},
        ),
    }


def register(settings: Settings, folders: dict[str, Path]) -> ChampionSet:
    """Log and register the set the way `streamrec train` does; the gate promotes it."""
    client = configure(settings, experiment="bench")
    with mlflow.start_run():
        logged = {stage: log_folder(folder, stage) for stage, folder in folders.items()}
    decision = register_set_and_gate(
        client, set_id="bench", models=logged, metric_name="bench", metric=1.0
    )
    if not decision.promoted:
        raise SystemExit(f"the bench set was not promoted: {decision.reason}")
    return ChampionSet("bench", decision.versions, {})


def http_latencies(url: str, users: list[str], n: int, clients: int) -> tuple[list[float], float]:
    """Per-request ms and requests/s with ``clients`` sequential clients in parallel."""
    samples: list[float] = []
    lock = threading.Lock()
    versions: set[str] = set()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=url, timeout=30) as http:
            for _ in range(n // clients):
                start = time.perf_counter()
                response = http.get("/recommend", params={"user_id": rng.choice(users), "k": 10})
                elapsed = (time.perf_counter() - start) * 1000
                response.raise_for_status()
                with lock:
                    samples.append(elapsed)
                    versions.add(response.json()["model_version"])

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    rate = len(samples) / (time.perf_counter() - started)
    print(f"    served by: {', '.join(sorted(versions))}")
    return samples, rate


def wait_for_label(url: str, label: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        detail = httpx.get(f"{url}/readyz", timeout=10).json()["checks"]["models"]["detail"]
        if detail.startswith(label):
            return
        time.sleep(0.5)
    raise SystemExit(f"the API did not load {label}")


def real_requests(
    settings: Settings, cascade: LoadedCascade, users: list[str], n: int
) -> tuple[list[CascadeRequest], ItemTable]:
    """Requests built the way the API builds them, from the online store's rows."""
    reader = FeastFeatureReader(open_store(settings))

    async def read() -> tuple[list[tuple[str, RecentItems | None]], ItemFeatures]:
        stats = await reader.item_stats(list(cascade.item_ids))
        chosen = random.Random(3).sample(users, min(n, len(users)))
        recents = [(user, await reader.user_recent(user)) for user in chosen]
        return recents, ItemFeatures.build(cascade.item_ids, stats)

    recents, items = asyncio.run(read())
    now = user_now(None, items)
    table = items.table(now, cascade.trend_half_life_ms, cascade.categories)
    requests = [build_request(cascade, user, recent, 10, now) for user, recent in recents]
    return requests, table


def concurrent_rate(
    call: Callable[[CascadeRequest], object], requests: list[CascadeRequest]
) -> float:
    """Requests/s with two callers in threads (the API's inference concurrency)."""
    started = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(call, requests))
    return len(requests) / (time.perf_counter() - started)


def row(name: str, samples: list[float], extra: str = "") -> str:
    return (
        f"  {name:<34} median {statistics.median(samples):6.2f} ms  p95 "
        f"{percentile(samples, 95):6.2f}  p99 {percentile(samples, 99):6.2f}{extra}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--din-steps", type=int, default=300)
    args = parser.parse_args()
    # The stack's API picks up the registered set within a second.
    os.environ.setdefault("STREAMREC_MODEL_POLL_SECONDS", "1")

    with running_stack(SOURCE) as stack, tempfile.TemporaryDirectory() as scratch:
        log = pq.read_table(stack.settings.data_dir / "datasets" / SOURCE / "events.parquet")
        users = sorted(set(map(str, log["user_id"].to_pylist())))
        items = sorted(set(map(str, log["item_id"].to_pylist())))
        print(f"GET /recommend k=10 over HTTP, {SOURCE}, n={args.requests} per row")
        http_latencies(stack.url, users, 50, 1)  # warm-up
        results = {}
        for clients in (1, 4):
            results[("heuristic", clients)] = http_latencies(
                stack.url, users, args.requests, clients
            )

        folders = write_set(Path(scratch), users, items, args.din_steps)
        champion = register(stack.settings, folders)
        wait_for_label(stack.url, champion.label)
        http_latencies(stack.url, users, 50, 1)  # warm-up
        for clients in (1, 4):
            results[("cascade", clients)] = http_latencies(stack.url, users, args.requests, clients)
        for (served_by, clients), (samples, rate) in results.items():
            print(row(f"{served_by}, {clients} client(s)", samples, f"  ({rate:.0f} req/s)"))

        cascade = build_cascade(
            champion.label, champion.set_id, {s: read_folder(f) for s, f in folders.items()}
        )
        requests, table = real_requests(stack.settings, cascade, users, args.requests)

    print(f"model compute in process, {len(requests)} real users' histories, k=10 from 200")
    fp32 = cascade.models
    int8 = quantized(fp32)
    variants: dict[str, CascadeModels] = {"float32": fp32, "int8 dynamic": int8}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for name, models in variants.items():

            def call(request: CascadeRequest, models: CascadeModels = models) -> object:
                return recommend(models=models, items=table, request=request, config=cascade.config)

            samples = time_calls(call, requests)
            rate = concurrent_rate(call, requests)
            print(row(f"{name}, torch threads {threads}", samples, f"  (2 callers: {rate:.0f}/s)"))
    torch.set_num_threads(1)
    overlaps = []
    for request in requests:
        a = recommend(models=fp32, items=table, request=request, config=cascade.config).items
        b = recommend(models=int8, items=table, request=request, config=cascade.config).items
        overlaps.append(len(set(a.tolist()) & set(b.tolist())) / max(len(a), 1))
    print(f"  int8 vs float32 top-10 overlap: mean {statistics.mean(overlaps):.3f}")


if __name__ == "__main__":
    main()
