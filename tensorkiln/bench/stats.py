"""Latency statistics and the noise check used by every bench figure."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

# A run is flagged as too noisy to trust when its latencies spread this much. On these shared
# 2-core VMs a quiet run of a compute-bound model has a CV of 1-5 %; stalls push it past 10 %.
NOISY_CV = 0.10
NOISY_TAIL = 2.0  # p99 / median


@dataclass
class LatencyStats:
    """Latency distribution of one configuration, in milliseconds."""

    n: int
    min: float
    mean: float
    median: float
    p90: float
    p95: float
    p99: float
    max: float
    std: float
    cv: float  # coefficient of variation: std / mean

    @staticmethod
    def of(times_ms: Sequence[float]) -> LatencyStats:
        if len(times_ms) == 0:
            raise ValueError("no latencies to summarize")
        a = np.asarray(times_ms, dtype=np.float64)
        p90, p95, p99 = np.percentile(a, [90, 95, 99])
        mean = float(a.mean())
        std = float(a.std(ddof=1)) if a.size > 1 else 0.0
        return LatencyStats(int(a.size), float(a.min()), mean, float(np.median(a)), float(p90), float(p95),
                            float(p99), float(a.max()), std, std / mean if mean > 0 else 0.0)

    def noise_warning(self) -> str | None:
        """A sentence saying why these figures cannot be trusted, or None when they look stable."""
        why = []
        if self.cv > NOISY_CV:
            why.append(f"coefficient of variation {100 * self.cv:.0f} % > {100 * NOISY_CV:.0f} %")
        if self.median > 0 and self.p99 / self.median > NOISY_TAIL:
            why.append(f"p99 is {self.p99 / self.median:.1f}x the median")
        if self.n < 10:
            why.append(f"only {self.n} timed runs")
        if not why:
            return None
        return "machine too noisy to trust these figures (" + "; ".join(why) + "): rerun, lengthen --duration, " \
            "or compare side by side with --compare"

    def to_json(self) -> dict[str, float]:
        return asdict(self)


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (recorded next to every figure), None where unknown."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None
