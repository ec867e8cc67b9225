"""The `data` and `replay` subcommands: parsing, messages, exit codes."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from streamrec.cli.data import add_data_parser, add_replay_parser
from streamrec.settings import Settings


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="streamrec")
    sub = root.add_subparsers(dest="command", required=True)
    add_data_parser(sub)
    add_replay_parser(sub)
    return root


def run(argv: list[str], settings: Settings) -> int:
    args = parser().parse_args(argv)
    return int(args.func(args, settings))


def test_prepare_command(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    code = run(
        [
            "data",
            "prepare",
            "synthetic:users=5,items=5,events=100,seed=1",
            "--since",
            "2024-01-01T00:00:00Z",
            "--k-core",
            "1",
        ],
        settings,
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "synthetic: read 100 rows" in out and "wrote" in out
    assert (settings.data_dir / "datasets" / "synthetic" / "events.parquet").is_file()


def test_prepare_options_are_parsed() -> None:
    args = parser().parse_args(
        [
            "data",
            "prepare",
            "movielens-100k",
            "--min-rating",
            "3.5",
            "--since",
            "881250949",
            "--until",
            "1998-01-01",
            "--k-core",
            "5",
            "--no-dedupe",
        ]
    )
    assert (args.min_rating, args.since, args.until) == (3.5, 881250949000, 883612800000)
    assert (args.k_core, args.dedupe) == (5, False)
    assert parser().parse_args(["data", "prepare", "x"]).dedupe is True


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["data", "prepare", "netflix"], "unknown source 'netflix'"),
        (["data", "prepare", "amazon-books:/nope/Books_5.json.gz"], "no such file"),
        (["data", "prepare", "synthetic:users=zero"], "not a number"),
        (["replay", "movielens-100k"], "run `streamrec data prepare movielens-100k` first"),
        (["data", "fetch", "amazon-books"], "data prepare amazon-books:PATH"),
        (["data", "fetch", "imagenet"], "unknown dataset"),
    ],
)
def test_errors_are_one_clear_line(
    argv: list[str], message: str, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(argv, settings) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["replay", "movielens-100k", "--speed", "0"], "positive"),
        (["replay", "movielens-100k", "--speed", "fast"], "neither a number nor 'max'"),
        (["replay", "movielens-100k", "--since", "yesterday"], "ISO 8601"),
        (["data", "prepare", "synthetic", "--k-core", "0"], "at least 1"),
    ],
)
def test_bad_arguments_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parser().parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_replay_speed_values() -> None:
    assert parser().parse_args(["replay", "x", "--speed", "max"]).speed is None
    assert parser().parse_args(["replay", "x"]).speed is None
    args = parser().parse_args(["replay", "x", "--speed", "25", "--rebase-now"])
    assert (args.speed, args.rebase_now) == (25.0, True)


def test_synthetic_needs_no_fetch(
    settings: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert run(["data", "fetch", "synthetic"], settings) == 0
    assert "needs no fetch" in capsys.readouterr().out


def test_progress_line_text() -> None:
    import io

    from replay.progress import ProgressLine, describe
    from replay.replayer import ReplayStatus

    status = ReplayStatus("running", 1_000_000_000_000, 12_345, 0, 2_000.4, 10.0)
    assert describe(status) == (
        "replay running: 12,345 events, 2,000 ev/s, at 2001-09-09T01:46:40Z, speed 10x"
    )
    stream = io.StringIO()
    line = ProgressLine(stream)
    line(status)
    line.finish(ReplayStatus("finished", None, 0, 2, 0.0, None))
    assert stream.getvalue().splitlines() == [
        describe(status),
        "replay finished: 0 events, 2 failed, 0 ev/s, at -, speed max",
    ]
