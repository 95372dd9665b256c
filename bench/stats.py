"""Summaries of latency samples: medians and p99 are what the report quotes."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Summary:
    """Seconds; `n` samples. The machine is shared and noisy, so the median is the headline."""

    n: int
    median: float
    p99: float
    minimum: float
    maximum: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Summary:
        if not samples:
            raise ValueError("no samples to summarise")
        ordered = sorted(samples)
        rank = max(0, min(len(ordered) - 1, round(0.99 * (len(ordered) - 1))))
        return cls(
            n=len(ordered),
            median=statistics.median(ordered),
            p99=ordered[rank],
            minimum=ordered[0],
            maximum=ordered[-1],
        )

    def ms(self) -> str:
        return f"{self.median * 1000:.1f} ms (p99 {self.p99 * 1000:.1f} ms, n={self.n})"
