"""The engine and its peers timed side by side, per batch size (interleaved protocol)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tensorkiln.bench.interleave import SETTLE_S, Runner, measure_side_by_side
from tensorkiln.bench.peers import LABELS, Peer, agreement


@dataclass
class PeerRow:
    runtime: str
    median_ms: float
    p99_ms: float
    samples_per_s: float
    speedup: float  # peer time / tensorkiln time (median of per-round ratios): > 1 means tensorkiln is faster
    max_rel_diff: float | None  # largest output difference vs tensorkiln, relative to its largest value

    def to_json(self) -> dict[str, Any]:
        return {"runtime": self.runtime, "label": LABELS.get(self.runtime, self.runtime),
                "median_ms": self.median_ms, "p99_ms": self.p99_ms, "samples_per_s": self.samples_per_s,
                "tensorkiln_speedup": self.speedup, "max_rel_diff_vs_tensorkiln": self.max_rel_diff}


@dataclass
class PeerBatch:
    batch: int
    rounds: int
    rows: list[PeerRow] = field(default_factory=list)
    load: list[float] | None = None
    errors: dict[str, str] = field(default_factory=dict)  # peers that failed at this batch

    def to_json(self) -> dict[str, Any]:
        return {"batch": self.batch, "rounds": self.rounds, "runtimes": [r.to_json() for r in self.rows],
                "errors": self.errors, "load_average": self.load}


def compare_batch(engine_fn: Callable[[], Any], peers: list[Peer], feeds: Mapping[str, np.ndarray], batch: int,
                  *, seconds: float = 10.0, min_rounds: int = 5, max_rounds: int = 30,
                  settle_s: float = SETTLE_S) -> PeerBatch:
    """Interleaved rounds of tensorkiln and every peer on ``feeds``; rounds sized to ``seconds``."""
    from tensorkiln.bench.stats import load_average

    ours = engine_fn()
    runners = [Runner("tensorkiln", engine_fn, batch)]
    out = PeerBatch(batch, 0)
    diffs: dict[str, float | None] = {}
    t0 = time.perf_counter()
    engine_fn()
    cost = time.perf_counter() - t0
    for p in peers:
        try:
            theirs = p.run(feeds)  # first call: compiles / allocates, never timed
            t0 = time.perf_counter()
            p.run(feeds)
            cost += time.perf_counter() - t0
        except Exception as e:
            out.errors[p.name] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            continue
        diffs[p.name] = agreement(ours, theirs)
        runners.append(Runner(p.name, functools.partial(p.run, feeds), batch))
    per_round = 2 * cost + (settle_s * len(runners) if len(runners) > 1 else 0.0)
    rounds = int(min(max_rounds, max(min_rounds, seconds / max(per_round, 1e-6))))
    res = measure_side_by_side(runners, rounds=rounds, baseline="tensorkiln", settle_s=settle_s)
    out.rounds = rounds
    for r in runners:
        med = res.median(r.name)
        out.rows.append(PeerRow(r.name, med, res.p99(r.name), batch * 1e3 / med if med > 0 else 0.0,
                                res.ratio(r.name, "tensorkiln"),
                                diffs.get(r.name)))
    out.load = load_average()
    return out
