"""`streamrec`: one command with subcommands; `streamrec SUBCOMMAND --help` for each.

One module per command group registers its parsers; each command imports what it needs
when it runs, so `--help` and the light commands start without torch, Ray, Spark or Feast.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from streamrec.cli import data, experiments, monitor, serve, services, stream, train
from streamrec.infra.quiet import quiet_libraries


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamrec",
        description="Real-time recommendations from an event log. Settings come from "
        "STREAMREC_* environment variables (see README).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    services.register(sub)
    data.add_data_parser(sub)
    data.add_replay_parser(sub)
    stream.register(sub)
    serve.register(sub)
    train.register(sub)
    experiments.register(sub)
    monitor.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # httpx logs every request at INFO; health probes and Prometheus queries are many.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    quiet_libraries()
    from pydantic import ValidationError

    from streamrec.settings import load_settings

    try:
        settings = load_settings()
    except ValidationError as exc:
        print(f"streamrec: bad settings:\n{exc}", file=sys.stderr)
        return 2
    code: int = args.func(args, settings)
    return code


if __name__ == "__main__":
    sys.exit(main())
