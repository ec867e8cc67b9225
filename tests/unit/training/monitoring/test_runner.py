"""What the monitor reads back from a finished `streamrec retrain`."""

from __future__ import annotations

import json
from pathlib import Path

from training.monitoring.runner import read_outcome


def test_a_finished_retrain_reports_the_gates_decision(tmp_path: Path) -> None:
    report = {"set_id": "abc", "gate": {"promoted": False, "reason": "does not beat"}}
    (tmp_path / "eval.json").write_text(json.dumps(report))
    outcome = read_outcome(tmp_path, 0, 12.5)
    assert outcome.ok and outcome.set_id == "abc" and outcome.promoted is False
    assert outcome.reason == "does not beat" and outcome.seconds == 12.5


def test_a_failed_retrain_says_why(tmp_path: Path) -> None:
    (tmp_path / "retrain.log").write_text("...\nstreamrec train: only 12 archived interactions\n")
    outcome = read_outcome(tmp_path, 2, 3.0)
    assert not outcome.ok
    assert (
        outcome.reason
        == "streamrec retrain exited 2: streamrec train: only 12 archived interactions"
    )
