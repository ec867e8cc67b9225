"""The command line: every option explained, and `--help` without the heavy libraries."""

from __future__ import annotations

import argparse
import subprocess
import sys

from streamrec.cli import build_parser

HEAVY = ("torch", "ray", "pyspark", "feast", "mlflow", "pandas", "faust", "fastapi")


def _options(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, (*path, name))
        elif not isinstance(action, argparse._HelpAction):
            yield path, action


def test_every_option_of_every_command_has_a_help_text() -> None:
    parser = build_parser()
    missing = [(" ".join(path), a.dest) for path, a in _options(parser) if not a.help]
    assert missing == []


def test_building_the_parser_imports_no_heavy_library() -> None:
    code = (
        "import sys; from streamrec.cli import build_parser; build_parser(); "
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
