"""Timing one configuration (batch size × streams) of an engine, trtexec style.

Warm-up for ``warmup_s`` seconds, then timed runs until both ``duration_s`` seconds have
passed and ``iterations`` runs are done. With one stream the caller's thread runs requests
back to back; with N streams, N client threads each keep one request in flight on a pool of N
streams (cores/N threads each), and a request's latency is its submit-to-result time.
Throughput is completed inferences over the timed window's wall time. Energy is read over the
same window where a counter is readable (see ``power``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tensorkiln.backends.cpu.program import profile_program
from tensorkiln.bench.power import EnergyMeter, efficiency
from tensorkiln.bench.stats import LatencyStats, load_average
from tensorkiln.engine import Engine
from tensorkiln.runtime import StreamPool


@dataclass
class Overhead:
    """Where one request's time goes: inside the kernels vs on the host around them.

    ``host_ms`` is measured inside one instrumented run (its wall time from feed checks to the
    returned dict, minus the time inside its kernels), so a slow window of the machine hits both
    parts alike; ``run_ms`` is a plain Engine.run of the same inputs, for reference.
    """

    run_ms: float  # median plain Engine.run latency
    compute_ms: float  # median sum of step (kernel) times
    host_ms: float  # median time outside the kernels: feed checks, step loop, output conversion
    pairs: int

    @property
    def host_share(self) -> float:
        total = self.host_ms + self.compute_ms
        return self.host_ms / total if total > 0 else 0.0

    def to_json(self) -> dict[str, float]:
        return {"run_ms": self.run_ms, "compute_ms": self.compute_ms, "host_ms": self.host_ms,
                "host_share": self.host_share, "pairs": self.pairs}


@dataclass
class ConfigResult:
    batch: int
    streams: int
    latency: LatencyStats
    wall_s: float
    inferences: int
    times_ms: list[float]
    overhead: Overhead | None = None
    power: dict[str, Any] = field(default_factory=dict)
    load: list[float] | None = None

    @property
    def inferences_per_s(self) -> float:
        return self.inferences / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def samples_per_s(self) -> float:
        return self.inferences_per_s * self.batch

    def to_json(self, raw: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "batch": self.batch, "streams": self.streams, "iterations": self.inferences,
            "wall_s": self.wall_s, "inferences_per_s": self.inferences_per_s, "samples_per_s": self.samples_per_s,
            "latency_ms": self.latency.to_json(), "noise_warning": self.latency.noise_warning(),
            "host_overhead": self.overhead.to_json() if self.overhead else None,
            "power": self.power, "load_average": self.load,
        }
        if raw:
            out["latencies_ms"] = [round(t, 4) for t in self.times_ms]
        return out


class Driver:
    """Runs requests on an engine with a given number of streams."""

    def __init__(self, engine: Engine, streams: int) -> None:
        self.engine = engine
        self.streams = max(1, streams)
        self._pool: StreamPool | None = None
        self._ctx: Any = None
        if self.streams != engine.streams:
            if self.streams == 1:  # the engine has its own streams: run in the caller's thread instead
                self._ctx = engine.create_context(engine.config.threads)
            else:
                self._pool = StreamPool(engine._program, self.streams)

    def request(self, feeds: Mapping[str, Any]) -> Any:
        eng = self.engine
        if self._ctx is not None:
            return self._ctx.run(feeds)
        if self._pool is None:
            return eng.run(feeds) if self.streams == 1 else eng.submit(feeds).result()
        tensors = eng._prepare(feeds)
        return self._pool.submit(tensors, lambda r: eng._finish(tensors, r, None, False, None)).result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None


def _loop(fn: Callable[[], Any], clients: int, min_n: int, min_s: float) -> tuple[list[float], float]:
    """Closed loop: ``clients`` threads call ``fn`` until at least ``min_n`` calls are done and ``min_s``
    seconds have passed since the loop started; returns (latencies ms, wall s). The wall time is
    measured from the same start as the deadline, so ``wall >= min_s`` always holds."""
    lat: list[float] = []
    lock = threading.Lock()
    t0 = time.perf_counter()
    t_stop = t0 + min_s

    def client() -> None:
        clock = time.perf_counter
        while True:
            with lock:
                if len(lat) >= min_n and clock() >= t_stop:
                    return
            t0 = clock()
            fn()
            dt = (clock() - t0) * 1e3
            with lock:
                lat.append(dt)

    if clients == 1:
        client()
    else:
        ths = [threading.Thread(target=client, name=f"bench-client-{i}") for i in range(clients)]
        for t in ths:
            t.start()
        for t in ths:
            t.join()
    return lat, time.perf_counter() - t0


def measure(engine: Engine, feeds: Mapping[str, Any], batch: int, *, streams: int = 1, duration_s: float = 3.0,
            iterations: int = 10, warmup_s: float = 0.5, meter: EnergyMeter | None = None,
            overhead_pairs: int = 0) -> ConfigResult:
    """Time one configuration; see the module docstring for the protocol."""
    drv = Driver(engine, streams)
    try:
        fn = lambda: drv.request(feeds)  # noqa: E731
        _loop(fn, drv.streams, drv.streams, warmup_s)
        meter = meter or EnergyMeter.open()
        token = meter.start()
        lat, wall = _loop(fn, drv.streams, iterations, duration_s)
        reading = meter.stop(token)
    finally:
        drv.close()
    res = ConfigResult(batch, drv.streams, LatencyStats.of(lat), wall, len(lat), lat,
                       power=efficiency(len(lat) * batch, reading), load=load_average())
    if overhead_pairs > 0:
        res.overhead = host_overhead(engine, feeds, overhead_pairs, max_s=max(duration_s, 1.0))
    return res


def host_overhead(engine: Engine, feeds: Mapping[str, Any], pairs: int = 5, max_s: float | None = None) -> Overhead:
    """Time outside the kernels vs inside them, one request at a time (medians over ``pairs``).

    Each pair is a plain Engine.run and an instrumented run: feed checks, the program run step
    by step timing every kernel (as ``Engine.profile`` does), output conversion. The
    instrumented run's wall time minus its kernel time is the host overhead (it includes two
    clock reads per step, about 0.1 µs each). With ``max_s`` it stops after two pairs once that
    many seconds have passed (large batches of big models).
    """
    run_ms: list[float] = []
    comp_ms: list[float] = []
    host_ms: list[float] = []
    prog = engine._program
    drv = Driver(engine, 1)
    clock = time.perf_counter
    t_start = clock()
    for k in range(max(1, pairs)):
        if k >= 2 and max_s is not None and clock() - t_start > max_s:
            break
        for plain in ((True, False) if k % 2 == 0 else (False, True)):
            if plain:
                t0 = clock()
                drv.request(feeds)
                run_ms.append((clock() - t0) * 1e3)
                continue
            t0 = clock()
            tensors = engine._prepare(feeds)
            outs, times = profile_program(prog, tensors)
            engine._finish(tensors, outs, None, False, None)
            wall = clock() - t0
            comp_ms.append(sum(times) * 1e3)
            host_ms.append(max(0.0, wall - sum(times)) * 1e3)
    return Overhead(float(np.median(run_ms)), float(np.median(comp_ms)), float(np.median(host_ms)), len(run_ms))
