"""``streamrec evaluate-api --prequential`` against a running stack (real Kafka, Redis,
worker, API): the HTTP figure beside the harness's on the same events."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pandas as pd
import pytest

from streamrec.infra.lag import wait_until_caught_up
from streamrec.infra.processes import run_streamrec, streamrec_process
from streamrec.paths import dataset_events
from streamrec.settings import Settings
from streamrec.times import format_ms
from tests.support import api_ready, wait_until

# Replays, a worker and an API on a shared two-core machine: minutes, not seconds.
pytestmark = pytest.mark.timeout(900)

SPEC = "synthetic:users=60,items=80,events=3000,seed=1,categories=4,switchers=0.3,session=4"


def test_http_and_harness_score_the_same_events(live_settings: Settings, tmp_path: Path) -> None:
    settings = live_settings.model_copy(update={"events_rate_limit": ""})
    run_streamrec(settings, "data", "prepare", SPEC)
    run_streamrec(settings, "features", "apply")
    events = pd.read_parquet(dataset_events(settings.data_dir, "synthetic"))
    until = format_ms(int(events["event_time"].quantile(0.8)))
    out = tmp_path / "api_prequential.json"
    with (
        streamrec_process(settings, "worker", log=tmp_path / "worker.log") as worker,
        streamrec_process(settings, "serve", log=tmp_path / "api.log") as api,
        httpx.Client(base_url=f"http://127.0.0.1:{settings.api_port}", timeout=30) as http,
    ):
        run_streamrec(settings, "replay", "synthetic", "--speed", "max", "--until", until)

        wait_until(
            api_ready(str(http.base_url)),
            180,
            "the API to be ready",
            proc=api,
            log=tmp_path / "api.log",
        )
        wait_until_caught_up(settings.bootstrap_servers, f"{settings.topic_prefix}worker", 300)
        output = run_streamrec(
            settings,
            "evaluate-api",
            "--prequential",
            "--until",
            until,
            "--events",
            "40",
            "--source",
            "synthetic",
            "--out",
            str(out),
        )
        assert worker.poll() is None and api.poll() is None
    print(output)
    result = json.loads(out.read_text())
    assert result["n_events"] == result["n_compared"] == 40
    assert result["model_versions"] == {"baseline-item-knn-v1": 40}
    figures = result["figures"]
    http_ndcg = figures["HTTP (the running API)"]["ndcg@10"]
    harness_ndcg = figures["harness: item-kNN + categories live"]["ndcg@10"]
    assert http_ndcg > 0 and harness_ndcg > 0
    # The same scorer on the same events; the API's item side lags by a refresh period.
    assert result["same_rank"] >= 0.5, result
    assert abs(http_ndcg - harness_ndcg) <= 0.15, result
