"""The arithmetic of bench/pipeline_scale.py and bench/process_stats.py: training stages
from epoch stamps, the timings `streamrec train` logs, a process tree's CPU and memory."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest

from bench.pipeline_scale import (
    FreshUsers,
    Stage,
    format_table,
    memory_mark,
    ray_log_seconds,
    stage_seconds,
    stops_after,
    targets,
    verdict,
)
from bench.process_stats import Sample, TreeSampler, TreeUsage, peak_process_rss, peak_rss


def test_stage_seconds_run_from_the_previous_stage_last_epoch() -> None:
    epochs = {
        "lightgcn_tail": [11_000, 12_000],  # the first stage: from the worker's start
        "din_tail": [15_000],
        "lightgcn": [17_000, 18_000, 20_000],
        "ranknet": [21_000, 25_000],
    }
    # The worker trained 20 s, ending at the last stamp (25 s): it started at 5 s.
    assert stage_seconds(epochs, worker_seconds=20.0) == {
        "lightgcn_tail": 7.0,
        "din_tail": 3.0,
        "lightgcn": 5.0,
        "ranknet": 5.0,
    }


def test_stage_seconds_order_stages_by_time_not_by_name_and_skip_empty_ones() -> None:
    epochs = {"b": [1_000], "a": [3_000], "empty": []}
    assert list(stage_seconds(epochs, worker_seconds=3.0)) == ["b", "a"]
    assert stage_seconds({}, 1.0) == {}


def test_ray_log_seconds_reads_the_start_up_and_each_step() -> None:
    output = (
        "2026-12-03 INFO train: read archive took 3.5 s\n"
        "2026-12-03 INFO train: Ray started in 12.25 s (1 worker(s))\n"
        "2026-12-03 INFO train: train (Ray Train) took 140.0 s\n"
    )
    assert ray_log_seconds(output) == {
        "ray start": 12.25,
        "read archive": 3.5,
        "train (Ray Train)": 140.0,
    }


def test_tree_usage_counts_each_process_once_and_peaks_on_one_instant() -> None:
    usage = TreeUsage()
    usage.add([Sample(1, 10.0, 1.0, 100), Sample(2, 11.0, 0.5, 300)])
    usage.mark_start()  # what ran before is not the stage's
    usage.add([Sample(1, 10.0, 3.0, 200), Sample(2, 11.0, 2.5, 250)])  # 450 at once
    usage.add([Sample(1, 10.0, 4.0, 150)])  # 2 exited: its last sample still counts
    usage.add([Sample(2, 99.0, 1.0, 50)])  # a new process that reused pid 2
    assert usage.cpu_seconds == pytest.approx(3.0 + 2.0 + 1.0)
    assert usage.peak_tree_rss == 450
    assert usage.processes_seen == 3


def _parent_of(child_code: str) -> subprocess.Popen[bytes]:
    """A Python process that runs ``child_code`` in a child of its own and waits for it."""
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child_code!r}])",
        ]
    )


def test_tree_sampler_sees_a_child_burn_cpu_and_the_root_peak() -> None:
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.6: pass\n"
    parent = _parent_of(burn)
    with TreeSampler(parent.pid, interval=0.05) as sampler:
        time.sleep(0.3)
        assert peak_rss(parent.pid) > 0
        parent.wait(30)
    assert sampler.usage.processes_seen >= 2
    assert sampler.usage.cpu_seconds >= 0.3
    assert sampler.usage.peak_tree_rss > 0
    assert peak_rss(parent.pid) == 0  # reaped: nothing to read


def test_the_peak_of_a_process_tree_is_its_largest_member_not_its_root() -> None:
    # A small parent whose child holds 200 MiB: the mark a served API's workers leave.
    parent = _parent_of("b = b'x' * (200 * 2**20); import time; time.sleep(30)")
    try:
        deadline = time.monotonic() + 20
        while peak_process_rss(parent.pid) < 200 * 2**20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert peak_process_rss(parent.pid) >= 200 * 2**20
        assert peak_rss(parent.pid) < 100 * 2**20
    finally:
        for child in psutil.Process(parent.pid).children(recursive=True):
            child.kill()
        parent.kill()
        parent.wait(10)
    assert peak_process_rss(parent.pid) == 0


def test_format_table_and_verdict() -> None:
    stage = Stage("replay", wall_s=10.0, cpu_s=5.0, peak_rss_bytes=2**20 * 300)
    stage.extra = {"events/s": 100000.0, "nested": {"not": "shown"}}
    table = format_table([stage])
    assert "| replay | 10.0 | 5.0 | 0.50 | 300 |" in table
    assert "events/s 100,000.0" in table and "nested" not in table
    assert verdict(59.0, 60.0) == "met" and verdict(60.0, 60.0) == "NOT met"


def test_targets_judge_only_the_stages_that_ran() -> None:
    stages = [
        Stage("prepare", wall_s=20.0),
        Stage("replay --speed max", wall_s=30.0),
        Stage("worker (to lag 0)", extra={"worker peak RSS MiB": 2048.0}),
    ]
    assert targets(stages) == {
        "prepare + replay < 60 s": {"s": 50.0, "verdict": "met"},
        "worker < 2 GiB resident": {"MiB": 2048.0, "verdict": "NOT met"},
    }
    stages.append(Stage("train", wall_s=1300.0))
    stages.append(Stage("serve: vegeta 200/s", extra={"API peak RSS MiB": 900.0}))
    assert targets(stages)["train < 20 min"] == {"s": 1300.0, "verdict": "NOT met"}
    assert targets(stages)["API < 2 GiB resident"]["verdict"] == "met"


def test_until_stops_after_the_named_stage_and_no_earlier() -> None:
    assert not stops_after("replay", "worker")
    assert stops_after("worker", "worker")
    assert stops_after("archive", "worker")
    assert not stops_after("train", "serve")
    assert stops_after("serve", "serve")


def test_memory_marks_one_figure_per_step_the_first_time_it_is_reached() -> None:
    marks: dict[int, float] = {}
    for folded, rss in [(0, 100.0), (50, 110.0), (100, 120.0), (130, 125.0), (260, 150.0)]:
        memory_mark(folded, 100, marks, rss)
    assert marks == {100: 120.0, 200: 150.0}


def test_fresh_users_hand_each_user_out_once_before_any_again() -> None:
    users = [f"u{n}" for n in range(10)]
    fresh = FreshUsers(users, seed=1)
    first, second = fresh.take(4), fresh.take(6)
    assert sorted(first + second) == users  # every user once: no list the API kept
    assert fresh.take(3) == first[:3]  # then the same order again
    assert FreshUsers(users, seed=1).take(10) == first + second  # seeded
