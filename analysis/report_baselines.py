"""``python -m analysis.report_baselines``: every baseline on one leak-free time split.

Prints a Markdown report and writes ``reports/baselines.json``. The main table is the
protocol of :mod:`training.data.split` (80/10/10 by default, the test period only, every user
with a relevant test item, new users included). A second table re-scores the
non-learned baselines under protocol variants, so numbers quoted from elsewhere can be
matched to the protocol that produced them.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from streamrec.paths import dataset_events
from streamrec.settings import load_settings
from training.data.split import (
    SplitConfig,
    load_events,
    restrict_target,
    split_summary,
)
from training.data.split import time_split as make_split
from training.evaluation.baselines import (
    BPRConfig,
    bpr_scorer,
    choose_knn_neighbours,
    item_knn_scorer,
    non_learned_scorers,
    popularity_scorer,
    recent_popularity_scorer,
)
from training.evaluation.evaluate import DEFAULT_KS, Scorer, evaluate, evaluate_seeds

TABLE_COLUMNS = (
    ("R@10", "recall@10"),
    ("R@20", "recall@20"),
    ("R@50", "recall@50"),
    ("R@100", "recall@100"),
    ("R@200", "recall@200"),
    ("N@10", "ndcg@10"),
    ("N@20", "ndcg@20"),
    ("Cov@10", "coverage@10"),
    ("PopBias@10", "popularity_bias@10"),
)
SLICE_NAMES = ("new", "light", "heavy")


def protocol_variants(
    events: Any, config: SplitConfig, knn_neighbours: int
) -> list[dict[str, Any]]:
    """NDCG@10 of the non-learned baselines under the standard protocol and variants."""
    rows = []
    variants: list[tuple[str, SplitConfig]] = [
        (f"{config.train_fraction:.0%} train, test period only", config),
        (
            f"{config.train_fraction:.0%} train, test = everything after the cut",
            SplitConfig(config.train_fraction, 0.0),
        ),
    ]
    for label, variant_config in variants:
        split = make_split(events, variant_config)
        returning = split.test.users < split.n_train_users
        for users_label, keep in (
            ("all users", np.ones_like(returning)),
            ("returning users only", returning),
            ("new users only", ~returning),
        ):
            restricted = replace(split, test=restrict_target(split.test, keep))
            row: dict[str, Any] = {
                "protocol": label,
                "users": users_label,
                "n_users": int(keep.sum()),
            }
            for name, scorer in (
                ("popularity", popularity_scorer(restricted)),
                ("recent 14d", recent_popularity_scorer(restricted, 14)),
                ("ItemKNN", item_knn_scorer(restricted, knn_neighbours)),
            ):
                row[name] = evaluate(scorer, restricted, ks=(10,))["ndcg@10"]
            rows.append(row)
    return rows


def _fmt(value: float | None, spread: float | None = None) -> str:
    if value is None:
        return "–"
    return f"{value:.4f}" if spread is None else f"{value:.4f} ± {spread:.4f}"


def markdown(report: dict[str, Any]) -> str:
    summary = report["split"]
    lines = [
        f"## Baselines on {report['source']} (test period, full ranking)",
        "",
        f"Train before {summary['train_end']} UTC, validation until "
        f"{summary['validation_end']} UTC. {summary['train_events']} training events, "
        f"{summary['train_users']} training users, {summary['candidates']} candidates. "
        f"Test: {summary['test_users']} users evaluated ({summary['test_new_users']} new), "
        f"{summary['test_users_skipped']} skipped without a relevant item, median "
        f"{summary['test_relevant_per_user_median']:.0f} relevant items per user. "
        f"Light/heavy threshold: {report['light_heavy_threshold']:.0f} training events.",
        "",
    ]
    slice_sizes = report["slice_sizes"]
    header = [name for name, _ in TABLE_COLUMNS] + [
        f"N@10 {name} ({slice_sizes[name]})" for name in SLICE_NAMES
    ]
    lines.append("| baseline | " + " | ".join(header) + " |")
    lines.append("|---" * (len(header) + 1) + "|")
    for name, entry in report["baselines"].items():
        mean, std = entry["mean"], entry.get("std")
        cells = [_fmt(mean.get(key), std.get(key) if std else None) for _, key in TABLE_COLUMNS]
        for slice_name in SLICE_NAMES:
            slice_mean = mean["slices"][slice_name].get("ndcg@10")
            slice_std = std["slices"][slice_name].get("ndcg@10") if std else None
            cells.append(_fmt(slice_mean, slice_std))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "### NDCG@10 under protocol variants (non-learned baselines)",
        "",
        "| protocol | users | n | popularity | recent 14d | ItemKNN |",
        "|---|---|---|---|---|---|",
    ]
    for row in report["protocol_variants"]:
        lines.append(
            f"| {row['protocol']} | {row['users']} | {row['n_users']} | "
            f"{_fmt(row['popularity'])} | {_fmt(row['recent 14d'])} | {_fmt(row['ItemKNN'])} |"
        )
    return "\n".join(lines)


def build_report(
    events: Any,
    source: str,
    config: SplitConfig,
    seeds: Sequence[int],
    bpr_config: BPRConfig,
    ks: Sequence[int] = DEFAULT_KS,
) -> dict[str, Any]:
    split = make_split(events, config)
    knn_neighbours = choose_knn_neighbours(split)
    baselines: dict[str, dict[str, Any]] = {}
    for name, scorer in non_learned_scorers(split, knn_neighbours).items():
        baselines[name] = {"mean": evaluate(scorer, split, ks=ks)}
    started = time.monotonic()

    def build_bpr(seed: int) -> Scorer:
        return bpr_scorer(split, bpr_config, seed)

    bpr = evaluate_seeds(build_bpr, split, seeds=seeds, ks=ks)
    baselines[f"BPR-MF ({len(seeds)} seeds)"] = {"mean": bpr["mean"], "std": bpr["std"]}
    first = next(iter(baselines.values()))["mean"]
    return {
        "source": source,
        "split_config": asdict(config),
        "split": split_summary(split),
        "light_heavy_threshold": first["light_heavy_threshold"],
        "slice_sizes": {name: first["slices"][name]["n_users"] for name in SLICE_NAMES},
        "knn_neighbours": knn_neighbours,
        "bpr_config": asdict(bpr_config),
        "bpr_seconds": time.monotonic() - started,
        "bpr_runs": bpr["runs"],
        "baselines": baselines,
        "protocol_variants": protocol_variants(events, config, knn_neighbours),
    }


def split_arguments(parser: argparse.ArgumentParser) -> None:
    """The log and split options the report commands share."""
    parser.add_argument("--source", default="movielens-100k", help="prepared log under data_dir")
    parser.add_argument("--train-fraction", type=float, default=0.8)
    parser.add_argument("--validation-fraction", type=float, default=0.1)


def source_events(parser: argparse.ArgumentParser, args: argparse.Namespace) -> pd.DataFrame:
    """The prepared log of ``args.source``; a usage error when it was never prepared."""
    path = dataset_events(load_settings().data_dir, args.source)
    if not path.exists():
        parser.error(f"no event log at {path}; run `streamrec data prepare` for {args.source}")
    return load_events(path)


def write_report(
    report: dict[str, Any], text: str, output: Path, out: Callable[[str], None]
) -> None:
    """``report`` as JSON at ``output``; ``text`` (its Markdown) to ``out``."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    out(text)
    out(f"\nwrote {output}")


def main(argv: Sequence[str] | None = None, out: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.report_baselines")
    split_arguments(parser)
    parser.add_argument("--seeds", type=int, default=5, help="BPR-MF seeds")
    parser.add_argument("--output", type=Path, default=Path("reports/baselines.json"))
    args = parser.parse_args(argv)
    events = source_events(parser, args)
    config = SplitConfig(args.train_fraction, args.validation_fraction)
    report = build_report(events, args.source, config, list(range(args.seeds)), BPRConfig())
    write_report(report, markdown(report), args.output, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
