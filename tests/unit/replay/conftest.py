"""Fixtures of the replay tests: fixture-file paths, settings in tmp, a fake clock."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from streamrec.settings import Settings

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", state_dir=tmp_path / "state")


class FakeClock:
    """Time moves only when the code under test sleeps; actions fire at scheduled times."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.time = start
        self.start = start
        self.sleeps: list[float] = []
        self._actions: list[tuple[float, Callable[[], None]]] = []

    def now(self) -> float:
        return self.time

    def sleep(self, seconds: float) -> None:
        assert seconds > 0, "the replayer should never sleep for nothing"
        self.sleeps.append(seconds)
        self.time += seconds
        due = [a for a in self._actions if a[0] <= self.time - self.start]
        self._actions = [a for a in self._actions if a not in due]
        for _, action in sorted(due, key=lambda a: a[0]):
            action()

    def at(self, elapsed: float, action: Callable[[], None]) -> None:
        """Run ``action`` once the clock has advanced ``elapsed`` seconds from start."""
        self._actions.append((elapsed, action))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
