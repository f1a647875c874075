"""Fair side-by-side timing on a noisy, shared machine.

Protocol (see ../shared/MEASURED.md): runtimes are timed in rounds; in each round every
runtime gets one untimed warm-up call immediately followed by its timed call, and the order
of runtimes flips every round. Figures are medians and p99 of the timed calls, and each
runtime's ratio to the baseline is the median of the per-round ratios, which cancels the
machine's slow windows that hit both runtimes of a round alike.

Before each runtime's warm-up the protocol waits ``settle_s`` (default 0.1 s) so that the
previous runtime's idle threads have stopped spinning: onnxruntime's intra-op workers
(``allow_spinning=1``, its default) keep spinning for tens of milliseconds after ``run``
returns, and on this 2-core machine they take a core from whatever runs next. Measured
(ResNet-50 INT8, tensorkiln's second call after an onnxruntime call): 58.7 ms with no pause,
52.9 after 2 ms, 45.8 after 10 ms, 33.8 after 50 ms, 34.4 after 200 ms. libgomp's workers
(tensorkiln, PyTorch) spin for well under a millisecond.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Runner:
    name: str
    fn: Callable[[], object]
    batch: int = 1


@dataclass
class SideBySide:
    times_ms: dict[str, list[float]] = field(default_factory=dict)
    baseline: str = ""

    def median(self, name: str) -> float:
        return float(np.median(self.times_ms[name]))

    def p99(self, name: str) -> float:
        return float(np.percentile(self.times_ms[name], 99))

    def ratio(self, name: str, base: str | None = None) -> float:
        """Median over rounds of time(name) / time(base); < 1 means faster than base."""
        b = self.times_ms[base or self.baseline]
        t = self.times_ms[name]
        return float(np.median([x / y for x, y in zip(t, b)]))


SETTLE_S = 0.1


def measure_side_by_side(runners: list[Runner], rounds: int = 20, baseline: str | None = None,
                         min_seconds: float = 0.0, settle_s: float = SETTLE_S) -> SideBySide:
    res = SideBySide({r.name: [] for r in runners}, baseline or runners[-1].name)
    for r in runners:  # first calls (allocation, lazy init) are never timed
        r.fn()
    t_start = time.perf_counter()
    k = 0
    while k < rounds or time.perf_counter() - t_start < min_seconds:
        order = runners if k % 2 == 0 else list(reversed(runners))
        for r in order:
            if settle_s > 0 and len(runners) > 1:
                time.sleep(settle_s)  # the previous runtime's threads stop spinning
            r.fn()  # untimed: wakes this runtime's threads after the other one ran
            t0 = time.perf_counter()
            r.fn()
            res.times_ms[r.name].append((time.perf_counter() - t0) * 1e3)
        k += 1
    return res
