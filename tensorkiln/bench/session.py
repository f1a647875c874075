"""A bench session: one model, its sweep, latency-budget search, peers and profile, and the JSON.

``tensorkiln bench`` is a thin layer over this::

    from tensorkiln.bench import Bench, BenchSettings, resolve_model
    b = Bench(resolve_model("resnet50"), BenchSettings(batches=[1, 2, 4], duration_s=3))
    rows = b.sweep()                      # one ConfigResult per (batch, streams)
    curve = b.budget(7.0)                 # highest throughput whose p99 <= 7 ms
    peers = b.peers(["ort", "openvino", "torch"])
    data = b.to_json()                    # every number, the machine fingerprint, versions
"""

from __future__ import annotations

import functools
import platform
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from tensorkiln.bench.inputs import ModelRef, batch_dim, describe, make_feeds, static_batch
from tensorkiln.bench.measure import ConfigResult, Driver, measure
from tensorkiln.bench.peers import LABELS, Peer, PeerSkipped, open_peer
from tensorkiln.bench.power import EnergyMeter
from tensorkiln.bench.sidebyside import PeerBatch, compare_batch
from tensorkiln.bench.stats import load_average
from tensorkiln.engine import Engine
from tensorkiln.engine.target import fingerprint
from tensorkiln.runtime.streams import cpu_count


@dataclass
class BenchSettings:
    batches: list[int] | None = None  # None: batch 1 (or the model's static batch)
    streams: list[int] = field(default_factory=lambda: [1])
    duration_s: float = 3.0  # timed seconds per configuration (at least)
    iterations: int = 10  # timed runs per configuration (at least)
    warmup_s: float = 0.5
    threads: int | None = None  # intra-op threads of the engine and every peer; None = all cores
    seed: int = 0
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    real_inputs: dict[str, np.ndarray] | None = None
    overhead_pairs: int = 5  # Engine.run vs sum-of-steps pairs per batch (0: skip)


@dataclass
class BudgetPoint:
    streams: int
    batch: int
    p99_ms: float
    median_ms: float
    samples_per_s: float
    within: bool

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass
class BudgetResult:
    budget_ms: float
    curve: list[BudgetPoint]
    best: BudgetPoint | None
    load: list[float] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"budget_ms": self.budget_ms, "curve": [p.to_json() for p in self.curve],
                "best": self.best.to_json() if self.best else None, "load_average": self.load}


class Bench:
    def __init__(self, ref: ModelRef, settings: BenchSettings | None = None, engine: Engine | None = None) -> None:
        self.ref = ref
        self.settings = settings or BenchSettings()
        opts: dict[str, Any] = {"threads": self.settings.threads} if self.settings.threads else {}
        t0 = time.perf_counter()
        self.engine = engine or ref.open(**opts)
        self.build_s = time.perf_counter() - t0
        self.threads = self.settings.threads or torch.get_num_threads()
        self.meter = EnergyMeter.open("cpu")
        self.results: list[ConfigResult] = []
        self.budget_result: BudgetResult | None = None
        self.peer_batches: list[PeerBatch] = []
        self.peers_skipped: dict[str, str] = {}
        self.profile_rows: list[dict[str, Any]] = []
        self.profile_batch: int | None = None

    # ----------------------------------------------------------------- inputs
    @property
    def has_batch(self) -> bool:
        return batch_dim(self.engine.inputs) is not None

    def batches(self) -> list[int]:
        if self.settings.batches:
            return list(self.settings.batches)
        return [1] if self.has_batch else [static_batch(self.engine.inputs)]

    def feeds(self, batch: int) -> dict[str, np.ndarray]:
        s = self.settings
        return make_feeds(self.engine, self.ref, batch, seed=s.seed, shapes=s.shapes, real=s.real_inputs)

    # ------------------------------------------------------------------ sweep
    def measure(self, batch: int, streams: int, feeds: Mapping[str, np.ndarray] | None = None,
                overhead: bool = True) -> ConfigResult:
        s = self.settings
        f = feeds if feeds is not None else self.feeds(batch)
        return measure(self.engine, f, batch, streams=streams, duration_s=s.duration_s, iterations=s.iterations,
                       warmup_s=s.warmup_s, meter=self.meter,
                       overhead_pairs=s.overhead_pairs if overhead and streams == 1 else 0)

    def sweep(self, on_result: Callable[[ConfigResult], None] | None = None) -> list[ConfigResult]:
        for b in self.batches():
            feeds = self.feeds(b)
            for st in self.settings.streams:
                r = self.measure(b, st, feeds)
                self.results.append(r)
                if on_result:
                    on_result(r)
        return self.results

    # --------------------------------------------------------- latency budget
    def budget(self, budget_ms: float, batches: list[int] | None = None, streams: list[int] | None = None,
               on_point: Callable[[BudgetPoint], None] | None = None) -> BudgetResult:
        """Highest samples/s whose p99 latency stays within ``budget_ms``, over batch and streams.

        For each stream count, batches grow (given list, or 1, 2, 4, … 128) until a p99 exceeds
        the budget; larger batches only make latency worse, so the search stops there.
        """
        if batches is None:
            batches = [2**k for k in range(8)] if self.has_batch else [static_batch(self.engine.inputs)]
        if streams is None:
            cores = cpu_count()
            streams = [s for s in (1, 2, 4, 8, 16) if s <= cores] or [1]
        curve: list[BudgetPoint] = []
        for st in streams:
            for b in sorted(batches):
                r = self.measure(b, st, overhead=False)
                p = BudgetPoint(st, b, r.latency.p99, r.latency.median, r.samples_per_s, r.latency.p99 <= budget_ms)
                curve.append(p)
                if on_point:
                    on_point(p)
                if not p.within:
                    break
        ok = [p for p in curve if p.within]
        best = max(ok, key=lambda p: p.samples_per_s) if ok else None
        self.budget_result = BudgetResult(budget_ms, curve, best, load_average())
        return self.budget_result

    # ------------------------------------------------------------------ peers
    def peers(self, names: list[str], seconds: float = 10.0, batches: list[int] | None = None,
              on_batch: Callable[[PeerBatch], None] | None = None,
              on_skip: Callable[[str, str], None] | None = None) -> list[PeerBatch]:
        opened: list[Peer] = []
        for n in names:
            try:
                opened.append(open_peer(n, self.ref.onnx_path, self.ref.zoo_name, self.threads))
            except PeerSkipped as e:
                self.peers_skipped[n] = str(e)
                if on_skip:
                    on_skip(n, str(e))
        drv = Driver(self.engine, 1)
        for b in batches or self.batches():
            feeds = self.feeds(b)
            pb = compare_batch(functools.partial(drv.request, feeds), opened, feeds, b, seconds=seconds)
            for n, why in pb.errors.items():
                if on_skip:
                    on_skip(n, f"failed at batch {b}: {why}")
            self.peer_batches.append(pb)
            if on_batch:
                on_batch(pb)
        return self.peer_batches

    # ---------------------------------------------------------------- profile
    def profile(self, batch: int | None = None, runs: int = 5) -> list[dict[str, Any]]:
        b = batch if batch is not None else self.batches()[0]
        self.profile_rows = self.engine.profile(self.feeds(b), runs=runs)
        self.profile_batch = b
        return self.profile_rows

    # ------------------------------------------------------------------- json
    def to_json(self, raw: bool = True) -> dict[str, Any]:
        s = self.settings
        return {
            "tool": "tensorkiln bench",
            "model": describe(self.ref),
            "model_path": str(self.ref.path),
            "zoo_model": self.ref.zoo_name,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "fingerprint": fingerprint(),
            "versions": versions(),
            "load_average": load_average(),
            "settings": {"batches": self.batches(), "streams": s.streams, "duration_s": s.duration_s,
                         "iterations": s.iterations, "warmup_s": s.warmup_s, "threads": self.threads,
                         "seed": s.seed, "inputs": "file" if s.real_inputs is not None else
                         ("zoo.sample_inputs" if self.ref.zoo_name and not s.shapes else "random"),
                         "build_s": self.build_s, "engine_steps": self.engine.num_steps},
            "power_source": self.meter.source or None,
            "power_note": None if self.meter.readable else f"power: {self.meter.unreadable}",
            "configs": [r.to_json(raw) for r in self.results],
            "latency_budget": self.budget_result.to_json() if self.budget_result else None,
            "peers": {"skipped": self.peers_skipped, "batches": [p.to_json() for p in self.peer_batches],
                      "labels": LABELS} if (self.peer_batches or self.peers_skipped) else None,
            "profile": {"batch": self.profile_batch, "steps": self.profile_rows} if self.profile_rows else None,
        }


def versions() -> dict[str, str | None]:
    import onnx

    from tensorkiln import __version__

    out: dict[str, str | None] = {"tensorkiln": __version__, "python": sys.version.split()[0],
                                  "platform": platform.platform(), "torch": torch.__version__,
                                  "numpy": np.__version__, "onnx": onnx.__version__}
    for mod in ("onnxruntime", "openvino", "matplotlib"):
        try:
            m = __import__(mod)
            out[mod] = getattr(m, "__version__", None) or (m.get_version() if hasattr(m, "get_version") else None)
        except Exception:
            out[mod] = None
    return out
