from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis import report_baselines
from tests.unit.training.helpers import planted_groups


def test_report_runs_end_to_end_on_a_tiny_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log_dir = tmp_path / "data" / "datasets" / "tiny"
    log_dir.mkdir(parents=True)
    planted_groups().to_parquet(log_dir / "events.parquet")
    monkeypatch.setenv("STREAMREC_DATA_DIR", str(tmp_path / "data"))
    printed: list[str] = []
    output = tmp_path / "reports" / "baselines.json"

    code = report_baselines.main(
        ["--source", "tiny", "--seeds", "2", "--train-fraction", "0.67", "--output", str(output)],
        out=printed.append,
    )

    assert code == 0
    report = json.loads(output.read_text())
    names = list(report["baselines"])
    assert names[0] == "popularity (all training)"
    assert [n for n in names if n.startswith("recent popularity")] == [
        f"recent popularity {d}d" for d in (1, 3, 7, 14)
    ]
    assert any(n.startswith("ItemKNN") for n in names)
    bpr = report["baselines"]["BPR-MF (2 seeds)"]
    assert set(bpr) == {"mean", "std"}
    assert len(report["bpr_runs"]) == 2
    assert "ndcg@10" in bpr["mean"] and "recall@200" not in bpr["mean"]  # 12 candidates
    table = printed[0]
    assert table.count("\n| ") >= len(names) + 6
    assert "| protocol | users |" in table


def test_missing_log_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMREC_DATA_DIR", str(tmp_path))
    with pytest.raises(SystemExit):
        report_baselines.main(["--source", "nowhere", "--output", str(tmp_path / "x.json")])
