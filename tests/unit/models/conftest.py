from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from models.din import DIN
from tests.unit.models.planted import train_din


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Two cores shared with other suites: one intra-op thread keeps the tiny models fast."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def trained_din() -> tuple[DIN, list[float]]:
    """DIN trained once on the planted TRIGGER -> TARGET rule, shared by DIN and cascade tests."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_din()
    finally:
        torch.set_num_threads(before)
