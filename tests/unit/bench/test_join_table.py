"""bench/join_table.py: its runs fold what they say, and the comparison runs both builds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.join_table import run_once

ROOT = Path(__file__).resolve().parents[3]


def test_a_run_holds_every_unclicked_list_and_counts_its_cost() -> None:
    result = run_once(lists=2000, rate=400, click_share=0.0, batch=100, seed=1)
    assert result["held"] == 2000
    assert len(result["cpu_ms_per_list"]) == 4 and result["cpu_ms_mean"] > 0
    clicked = run_once(lists=2000, rate=400, click_share=0.5, batch=100, seed=1)
    assert clicked["held"] == 2000  # five minutes of event time: nothing is due yet


def test_the_comparison_runs_this_build_and_a_revision_in_one_run() -> None:
    out = subprocess.run(
        [sys.executable, "bench/join_table.py", "--lists", "600", "--before", "HEAD"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "this build: CPU-ms per list" in out and "at HEAD: CPU-ms per list" in out
    assert "ratio before/after" in out
