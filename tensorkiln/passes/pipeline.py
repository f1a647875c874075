"""The pass pipeline: one ordered list. Each pass is ``run(graph) -> changed``."""

from __future__ import annotations

import time
from collections.abc import Callable

from tensorkiln.ir import Graph, verify
from tensorkiln.passes import dce

Pass = Callable[[Graph], bool]

PIPELINE: list[tuple[str, Pass]] = [
    ("dead-code", dce.run),
]


def run_pipeline(graph: Graph, disabled: set[str] | None = None, debug: bool = False) -> dict[str, float]:
    """Run every enabled pass in order; returns seconds spent per pass."""
    timings: dict[str, float] = {}
    disabled = disabled or set()
    for name, fn in PIPELINE:
        if name in disabled:
            continue
        t0 = time.perf_counter()
        fn(graph)
        timings[name] = time.perf_counter() - t0
        if debug:
            verify(graph)
    return timings
