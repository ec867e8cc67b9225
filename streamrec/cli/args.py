"""Argument types shared by the command groups: times, speeds, counts."""

from __future__ import annotations

import argparse

from streamrec.times import parse_time_ms


def time_arg(text: str) -> int:
    """Epoch seconds or ISO 8601, as epoch milliseconds."""
    try:
        return parse_time_ms(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def speed_arg(text: str) -> float | None:
    if text.strip().lower() == "max":
        return None
    try:
        speed = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number nor 'max'") from exc
    if not speed > 0 or speed == float("inf"):
        raise argparse.ArgumentTypeError(f"speed must be a positive number, got {text}")
    return speed


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_time_range(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--since",
        type=time_arg,
        metavar="T",
        help="only events at or after T (epoch seconds or ISO 8601, e.g. 1998-01-01T00:00:00Z)",
    )
    parser.add_argument(
        "--until", type=time_arg, metavar="T", help="only events before T (same formats)"
    )
