"""Independent calls spread over forked processes (training.forked)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from training.forked import forked_map


def _where(value: int) -> tuple[int, int, int]:
    return value * value, os.getpid(), torch.get_num_threads()


def test_the_calls_run_in_forked_processes_with_one_thread_and_come_back_in_order() -> None:
    big = np.arange(1_000_000)  # inherited by the fork, never pickled
    calls = [lambda n=n: (*_where(n), int(big[n])) for n in range(5)]
    results = forked_map(calls, processes=2)
    assert [square for square, *_ in results] == [0, 1, 4, 9, 16]
    assert [value for *_, value in results] == list(range(5))
    pids = {pid for _, pid, _, _ in results}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    assert {threads for _, _, threads, _ in results} == {1}


def test_one_process_runs_the_calls_here() -> None:
    threads = torch.get_num_threads()
    results = forked_map([lambda: _where(3)], processes=4)
    assert results == [(9, os.getpid(), threads)]


def test_a_failing_call_raises_in_the_caller() -> None:
    def fails() -> None:
        raise ValueError("the third call failed")

    with pytest.raises(ValueError, match="the third call failed"):
        forked_map([lambda: 1, lambda: 2, fails], processes=2)
