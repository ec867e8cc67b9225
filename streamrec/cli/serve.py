"""``streamrec serve``: the HTTP API."""

from __future__ import annotations

import argparse
from typing import Any

from streamrec.settings import Settings


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from api.main import run

    if args.port is not None:
        settings = settings.model_copy(update={"api_port": args.port})
    run(settings)
    return 0


def register(sub: Any) -> None:
    serve = sub.add_parser(
        "serve",
        help="run the HTTP API (/recommend, /events, SSE, metrics)",
        description="Serve the HTTP API on STREAMREC_API_HOST:STREAMREC_API_PORT.",
    )
    serve.add_argument("--port", type=int, default=None, help="override STREAMREC_API_PORT")
    serve.set_defaults(func=_serve)
