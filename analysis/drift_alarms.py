"""How often the monitor's drift rule fires on a log's own continuation, and on the same
traffic with a planted popularity inversion: the figures behind the rule's defaults
(docs/design.md, "Monitoring").

For each training-window size and live-window size, the reference of the first
``train`` events of a prepared log is compared (``streams.drift_reference``) with
consecutive, non-overlapping live windows of the events after it, as the monitor does;
a window drifts when at least half its columns do. Prints, per pair: drifted windows of
the continuation, the longest run of them (a run reaching ``--persist`` would be a false
trigger), and drifted windows of the inverted continuation.

    .venv/bin/python -m analysis.drift_alarms --log movielens-100k
"""

from __future__ import annotations

import argparse
from collections import Counter

import pandas as pd

from streamrec.paths import dataset_events
from streamrec.settings import load_settings
from streams.drift_monitor import catalogue_categories
from streams.drift_reference import LiveWindow, build_reference, compare_with_reference
from training.monitoring.policy import drift_signal


def _flags(reference: object, live: pd.DataFrame, window: int) -> list[bool]:
    flags = []
    for end in range(window, len(live) + 1, window):
        rows = live.iloc[end - window : end]
        results = compare_with_reference(
            reference,  # type: ignore[arg-type]
            LiveWindow(
                rows["user_id"].astype(str).tolist(),
                rows["item_id"].astype(str).tolist(),
                rows["action"].astype(str).tolist(),
            ),
        )
        flags.append(drift_signal(results))
    return flags


def _longest_run(flags: list[bool]) -> int:
    longest = current = 0
    for flag in flags:
        current = current + 1 if flag else 0
        longest = max(longest, current)
    return longest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log", default="movielens-100k", help="a prepared dataset")
    parser.add_argument("--train", type=int, nargs="+", default=[5000, 10_000, 20_000])
    parser.add_argument("--windows", type=int, nargs="+", default=[500, 1000, 2000])
    parser.add_argument("--live", type=int, default=20_000, help="continuation events")
    args = parser.parse_args()
    settings = load_settings()
    log = pd.read_parquet(dataset_events(settings.data_dir, args.log))
    log = log.sort_values("event_time", kind="stable").reset_index(drop=True)
    categories = catalogue_categories(settings.data_dir)
    print("| training events | window | continuation: drifted windows | longest run | inverted |")
    print("|---|---|---|---|---|")
    for train in args.train:
        until = int(log["event_time"].iloc[train])
        training, after = log[log["event_time"] < until], log[log["event_time"] >= until]
        ranked = [item for item, _ in Counter(training["item_id"]).most_common()]
        mirror = dict(zip(ranked, reversed(ranked), strict=True))
        for window in args.windows:
            reference = build_reference(
                until_ms=until,
                user_ids=training["user_id"].astype(str).tolist(),
                item_ids=training["item_id"].astype(str).tolist(),
                actions=training["action"].astype(str).tolist(),
                window_events=window,
                category_of=categories,
            )
            steady = _flags(reference, after.iloc[: args.live], window)
            live = after.iloc[: 5 * window]
            inverted = live.assign(item_id=[mirror.get(i, i) for i in live["item_id"]])
            shifted = _flags(reference, inverted, window)
            print(
                f"| {len(training):,} | {window:,} | {sum(steady)}/{len(steady)} | "
                f"{_longest_run(steady)} | {sum(shifted)}/{len(shifted)} |"
            )


if __name__ == "__main__":
    main()
