"""Summaries the benchmarks print: median and percentiles of repeated measurements."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100]."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary(name: str, values: Sequence[float], unit: str) -> str:
    return (
        f"{name}: median {statistics.median(values):,.1f} {unit}, "
        f"p5 {percentile(values, 5):,.1f}, p95 {percentile(values, 95):,.1f}, "
        f"min {min(values):,.1f}, max {max(values):,.1f} (n={len(values)})"
    )
