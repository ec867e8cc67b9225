"""Train and evaluate the cascade on a prepared log, without MLflow: the stages' own check.

``uv run python -m analysis.stage_check --seeds 0 1 --target validation`` prints, per
seed, the training time (wall and process CPU, which is what a shared machine distorts
least) and the headline metrics of every stage, then writes the full results as JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from training.fit.stages import evaluate_set, prepare, train_all


def headline(result: dict[str, Any]) -> dict[str, Any]:
    gcn, cascade = result["lightgcn"], result["cascade"]
    ranknet = result.get("ranknet", {})
    return {
        "lightgcn_ndcg@10": gcn["ndcg@10"],
        "lightgcn_recall@200": gcn.get("recall@200"),
        "din_auc": result["din"]["auc"],
        "din_gauc": result["din"]["gauc"],
        "ranknet_delta_ndcg@10": ranknet.get("delta_ndcg@10"),
        "ranknet_wilcoxon_p": ranknet.get("wilcoxon_p"),
        "cascade_ndcg@10": cascade["ndcg@10"],
        "cascade_recall@10": cascade["recall@10"],
        "cascade_coverage@10": cascade["coverage@10"],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--log", type=Path, default=Path("var/data/datasets/movielens-100k"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--target", choices=["validation", "test"], default="validation")
    parser.add_argument("--hyper", type=json.loads, default=None, help="JSON overrides")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("reports/stage_check.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    events = pd.read_parquet(args.log / "events.parquet")
    items_path = args.log / "items.parquet"
    items = pd.read_parquet(items_path) if items_path.exists() else None
    started = time.perf_counter()
    data = prepare(events, items)
    print(f"prepare: {time.perf_counter() - started:.1f} s")
    runs = []
    for seed in args.seeds:
        wall, cpu = time.perf_counter(), time.process_time()
        trained = train_all(data, args.hyper, seed)
        timing = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
        result = evaluate_set(trained, data, args.target)
        runs.append({"seed": seed, "train": timing, "result": result})
        print(json.dumps({"seed": seed, **timing, **headline(result)}))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(runs, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
