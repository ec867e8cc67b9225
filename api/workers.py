"""Several API processes on one port (``streamrec serve --workers N``), by uvicorn's own
supervisor: it spawns N processes on the one listening socket, restarts one that dies,
and on SIGTERM or SIGINT stops them all, each through its lifespan.

Each process builds its app with ``api.main:app_from_environment`` (an import-string
factory, as a spawned process needs), from the settings in the environment, as
``streamrec`` itself reads them. This module is light on purpose: the supervisor imports
it, never the app, the models or torch, so it stays a small process.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import uvicorn

from streamrec.settings import Settings

# Names the multiprocess metrics directory in each of several API processes.
SHARED_METRICS_ENV = "STREAMREC_API_METRICS_DIR"


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options, the same for one process and several."""
    return {
        "host": settings.api_host,
        "port": settings.api_port,
        # Open SSE streams are ended by sse-starlette on shutdown; don't wait for them long.
        "timeout_graceful_shutdown": 10,
        "timeout_keep_alive": settings.api_keep_alive_seconds,
        "log_level": "info",
        "access_log": settings.api_access_log,
    }


def serve_processes(settings: Settings, workers: int) -> None:
    """Serve the API from ``workers`` processes until interrupted."""
    if workers < 2:
        raise ValueError(f"several API processes means at least 2, got {workers}")
    if settings.redis_connection_url is None:
        raise ValueError(
            "several API processes share their state (replay control, rate limits, "
            "experiments) through Redis: set STREAMREC_REDIS_URL or serve one process"
        )
    metrics_dir = settings.state_dir / f"api-metrics-{settings.api_port}"
    # Files of a previous run would add its counts to this one's.
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    # The processes are spawned, so they read all of this from the environment: the
    # settings, and prometheus_client's multiprocess directory under both the names it and
    # Feast read, before either is imported.
    os.environ[SHARED_METRICS_ENV] = str(metrics_dir)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    os.environ["PROMETHEUS_MULTIPROCESS_DIR"] = str(metrics_dir)
    os.environ["STREAMREC_API_PORT"] = str(settings.api_port)
    os.environ["STREAMREC_STATE_DIR"] = str(settings.state_dir)
    os.environ["STREAMREC_DATA_DIR"] = str(settings.data_dir)
    uvicorn.run(
        "api.main:app_from_environment",
        factory=True,
        workers=workers,
        **server_options(settings),
    )
