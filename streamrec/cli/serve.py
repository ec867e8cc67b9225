"""``streamrec serve``: the HTTP API."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from streamrec.settings import Settings


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    if args.port is not None:
        settings = settings.model_copy(update={"api_port": args.port})
    if args.workers < 1:
        print(f"streamrec serve: --workers must be at least 1, got {args.workers}", file=sys.stderr)
        return 2
    if args.workers == 1:
        from api.main import run

        run(settings)
        return 0
    # The supervisor of several processes never imports the app (nor torch).
    from api.workers import serve_processes

    try:
        serve_processes(settings, args.workers)
    except ValueError as exc:
        print(f"streamrec serve: {exc}", file=sys.stderr)
        return 2
    return 0


def register(sub: Any) -> None:
    serve = sub.add_parser(
        "serve",
        help="run the HTTP API (/recommend, /events, SSE, metrics)",
        description="Serve the HTTP API on STREAMREC_API_HOST:STREAMREC_API_PORT.",
    )
    serve.add_argument("--port", type=int, default=None, help="override STREAMREC_API_PORT")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="API processes sharing the port (uvicorn's workers; metrics summed over all, "
        "state shared through Redis); default 1",
    )
    serve.set_defaults(func=_serve)
