"""`streamrec train` on a local Ray against a cluster of two Ray nodes on this machine:
issue 20 §4's local proof of multi-node training and its per-CPU-second figure.

    .venv/bin/python bench/ray_nodes.py [--hyper JSON] [--out reports/ray_nodes.json]

Needs a prepared and archived log (``make demo``'s, or ``streamrec data prepare`` and
``streamrec archive``). Two runs of the same `streamrec train`, each on a scratch state
directory (its own MLflow registry and Ray storage) over the settings' data:

1. ``local``: ``--workers 1`` with the local Ray the command starts (today's default);
2. ``local2``: ``--workers 2`` on that local Ray (one node, two workers);
3. ``cluster``: ``--workers 2`` attached (``STREAMREC_RAY_ADDRESS``) to a cluster this
   script starts with Ray's own ``ray.cluster_utils.Cluster``: a head node and a second
   node, one CPU each, so Ray Train must place one worker on each.

For each: wall seconds, the stage times and Ray's start the command logs (read as
``bench/pipeline_scale.py`` reads them), the machine's busy CPU seconds over the run (the
machine should be otherwise quiet: Ray's processes are not children of this one), and for
the cluster run the node of each Ray Train worker, read from the GCS's actor table. The
local runs start their Ray within the ``train (Ray Train)`` step; the cluster is started
before its run. On one two-core machine a second node adds no cores, so ``local2``
against ``cluster`` is what the second node costs per CPU-second, not what a second
machine would add.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.pipeline_scale import ray_log_seconds
from bench.stack_cpu import machine_busy
from streamrec.infra.processes import run_streamrec
from streamrec.paths import REPO_ROOT
from streamrec.settings import Settings, load_settings

# A short training: every stage runs through Ray Train, with few epochs.
SHORT = {
    "lightgcn": {"epochs": 4},
    "din": {"epochs": 1},
    "ranknet": {"epochs": 10},
    "sasrec": {"epochs": 3},
}


def timed_train(settings: Settings, workers: int, hyper: str, label: str) -> dict[str, Any]:
    busy_before, _ = machine_busy()
    started = time.monotonic()
    output = run_streamrec(
        settings,
        "train",
        "--workers",
        str(workers),
        "--no-bpr",
        "--streaming-events",
        "0",
        "--hyper",
        hyper,
        "--report-dir",
        str(settings.state_dir / "reports"),
        timeout=3600,
    )
    wall = time.monotonic() - started
    busy = machine_busy()[0] - busy_before
    result = {
        "run": label,
        "workers": workers,
        "wall_s": round(wall, 1),
        "machine_busy_cpu_s": round(busy, 1),
        "steps_s": ray_log_seconds(output),
    }
    print(json.dumps(result), flush=True)
    return result


def worker_nodes(address: str) -> dict[str, int]:
    """Ray Train workers per node id (short) in the cluster, alive or finished, from the
    GCS's actor table (Ray's state API needs the dashboard, which is not installed)."""
    import ray

    ray.init(address=address, log_to_driver=False, configure_logging=False)
    try:
        nodes: dict[str, int] = {}
        for actor in ray._private.state.actors().values():
            if "RayTrainWorker" in str(actor.get("ActorClassName", "")):
                node = str(actor.get("Address", {}).get("NodeID", "?"))[:8]
                nodes[node] = nodes.get(node, 0) + 1
        return nodes
    finally:
        ray.shutdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hyper", default=json.dumps(SHORT), help="`streamrec train --hyper`")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports" / "ray_nodes.json")
    runs = ["local", "local2", "cluster"]
    parser.add_argument("--runs", nargs="+", choices=runs, default=runs)
    args = parser.parse_args()
    base = load_settings()
    results = []
    with tempfile.TemporaryDirectory(prefix="ray-nodes-") as scratch:
        local = base.model_copy(update={"state_dir": Path(scratch) / "local", "ray_address": ""})
        if "local" in args.runs:
            results.append(timed_train(local, 1, args.hyper, "local Ray, 1 worker"))
        if "local2" in args.runs:
            two_local = local.model_copy(update={"state_dir": Path(scratch) / "local2"})
            results.append(timed_train(two_local, 2, args.hyper, "local Ray, 2 workers"))
        if "cluster" in args.runs:
            results.append(cluster_run(base, Path(scratch), args.hyper))
    summary = summarize(results)
    print(summary)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"runs": results, "summary": summary}, indent=2))
    return 0


def cluster_run(base: Settings, scratch: Path, hyper: str) -> dict[str, Any]:
    """`streamrec train --workers 2` on a two-node cluster started here; its result."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False},
    )
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        two = base.model_copy(
            update={"state_dir": scratch / "cluster", "ray_address": cluster.address}
        )
        result = timed_train(two, 2, hyper, "two nodes, 2 workers")
        result["workers_per_node"] = worker_nodes(cluster.address)
        return result
    finally:
        cluster.shutdown()


def summarize(results: list[dict[str, Any]]) -> str:
    lines = [
        f"{r['run']}: {r['wall_s']} s wall, {r['machine_busy_cpu_s']} machine CPU-s, "
        f"Ray Train {r['steps_s'].get('train (Ray Train)', 0)} s"
        + (f", workers per node {r['workers_per_node']}" if "workers_per_node" in r else "")
        for r in results
    ]
    first = results[0] if results else None
    for other in results[1:]:
        assert first is not None
        cpu = other["machine_busy_cpu_s"] / first["machine_busy_cpu_s"]
        wall = other["wall_s"] / first["wall_s"]
        lines.append(f"{other['run']} / {first['run']}: CPU-s {cpu:.2f}, wall {wall:.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
