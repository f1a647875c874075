"""The Engine: an optimized graph lowered to a program of pre-bound kernels."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from tensorkiln.backends.cpu.program import Program, lower
from tensorkiln.backends.cpu.registry import REGISTRY
from tensorkiln.engine.specs import FeedChecker, TensorSpec, check_feeds, to_numpy
from tensorkiln.errors import FeedError, OptionError
from tensorkiln.ir import Graph
from tensorkiln.runtime import ExecutionContext, ProfileSet, StreamPool, auto_streams
from tensorkiln.runtime.allocator import tune_allocator


@dataclass
class BuildConfig:
    """Every build option, declared once with its default."""

    optimize: bool = True  # run the graph passes (switch off to bisect)
    fusion: bool = True  # layer fusions (BatchNorm folding, Conv+Add+activation, …)
    layout: bool = True  # let convolution regions run channels-last (oneDNN); False keeps NCHW
    planner: bool = True  # release each intermediate after its last reader; False keeps all alive
    threads: int | None = None  # intra-op threads; None = torch's default (all cores)
    streams: int | str = 1  # CPU streams (throughput mode): N groups of cores/N threads, or "auto"
    # optimization profiles: {"input": {"min": shape, "opt": shape, "max": shape}} or a list of them
    shapes: Any = None
    passes_disabled: list[str] = field(default_factory=list)
    opt_level: int = 2  # 0 = heuristic tactics only … 5 = most timing repeats
    tune_budget_s: float = 60.0  # tactic timing aims to fit (fewer in-network rounds, never under 3)
    timing_cache: str | None = None  # path; None = ~/.cache/tensorkiln/timing/<machine>.json, "" = none
    tactics_file: str | None = None  # JSON {node name: tactic} replayed instead of timing
    progress: bool = False  # show a progress bar while tuning (the CLI turns it on)
    # precision (tensorkiln.quant): the lowest precision a layer may run in — "fp32", "fp16", "bf16",
    # "int8" or "best"; each layer gets the fastest allowed one that keeps accuracy_budget
    precision: str = "fp32"
    strict: bool = False  # force the requested precision on every layer that has a kernel for it
    calibrator: str = "auto"  # int8 ranges: auto | minmax | entropy | percentile-99.9|99.99|99.999 | mse
    calibration_cache: str | None = None  # JSON file of ranges: read when present, written after calibrating
    accuracy_budget: float | None = 0.01  # allowed loss of accuracy_metric vs fp32 on held-out data; None = off
    accuracy_metric: str = "auto"  # "auto" (top1 for classifiers, else cosine), "top1", "cosine"; or a callable
    layer_precision: dict[str, str] = field(default_factory=dict)  # node name or op type → "fp32"|"int8"|…

    @staticmethod
    def from_options(options: Mapping[str, Any]) -> BuildConfig:
        known = {f for f in BuildConfig.__dataclass_fields__}
        unknown = [k for k in options if k not in known]
        if unknown:
            raise OptionError(f"unknown build option(s) {unknown}; known options: {sorted(known)}")
        cfg = BuildConfig(**options)
        if cfg.threads is not None and (not isinstance(cfg.threads, int) or cfg.threads < 1):
            raise OptionError(f"threads must be a positive integer, got {cfg.threads!r}")
        if not isinstance(cfg.opt_level, int) or not 0 <= cfg.opt_level <= 5:
            raise OptionError(f"opt_level must be an integer 0…5, got {cfg.opt_level!r}")
        if cfg.streams != "auto" and (not isinstance(cfg.streams, int) or cfg.streams < 1):
            raise OptionError(f"streams must be a positive integer or 'auto', got {cfg.streams!r}")
        return cfg

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Engine:
    """A built model: run it, inspect it, save it."""

    def __init__(self, graph: Graph, config: BuildConfig, target: dict[str, Any],
                 source: dict[str, Any] | None = None) -> None:
        self.graph = graph
        self.config = config
        self.target = target
        self.source = source or {}
        # pass name → {"fired": n, "why_not": [[node, reason], …]}
        self.build_reports: dict[str, dict[str, Any]] = {}
        self.inputs: list[TensorSpec] = [TensorSpec.of(v) for v in graph.inputs]
        self.outputs: list[TensorSpec] = [TensorSpec.of(v) for v in graph.outputs]
        self._check = FeedChecker(self.inputs)
        self.tuning: list[dict[str, Any]] = []  # autotuner records (fresh builds only)
        self.tuning_stats: dict[str, Any] = {}
        self._lower()
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        tune_allocator()
        self.profiles = ProfileSet.parse(config.shapes, [s.name for s in self.inputs])
        self.streams = auto_streams(self.weight_bytes()) if config.streams == "auto" else int(config.streams)
        self._pool: StreamPool | None = None
        self._pool_lock = threading.Lock()

    def _lower(self) -> None:
        """(Re)build the program from the graph, e.g. after the autotuner chose tactics."""
        self._program: Program = lower(self.graph, REGISTRY, release=self.config.planner,
                                       reuse=getattr(self, "_program", None))
        self._protected_ptrs = frozenset(
            t.untyped_storage().data_ptr()
            for t in self._program.template
            if t is not None and t.numel() > 0
        )
        with getattr(self, "_pool_lock", threading.Lock()):
            if getattr(self, "_pool", None) is not None:
                self._pool.close()  # type: ignore[union-attr]
                self._pool = None

    # ------------------------------------------------------------------ run
    def _prepare(self, feeds: Mapping[str, Any]) -> list[torch.Tensor]:
        tensors = self._check(feeds)
        if self.profiles is not None:
            self.profiles.check([s.name for s in self.inputs], [tuple(t.shape) for t in tensors])
        return tensors

    def _stream_pool(self) -> StreamPool:
        with self._pool_lock:
            if self._pool is None:
                self._pool = StreamPool(self._program, self.streams,
                                        None if self.streams > 1 else self.config.threads)
            return self._pool

    def run(
        self,
        feeds: Mapping[str, Any],
        *,
        output_names: Sequence[str] | None = None,
        as_torch: bool = False,
        outputs: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Run the engine. ``feeds`` maps input names to numpy arrays, torch tensors or DLPack
        producers. Safe to call from many threads at once.

        Returns a dict of output name → numpy array (or torch tensor with ``as_torch``). With
        ``outputs={name: buffer}`` results are written into the caller's numpy/torch buffers.
        """
        tensors = self._prepare(feeds)
        if self.streams > 1 and not threading.current_thread().name.startswith("tensorkiln-stream-"):
            return self._stream_pool().submit(
                tensors, lambda r: self._finish(tensors, r, output_names, as_torch, outputs)).result()
        return self._finish(tensors, self._program(tensors), output_names, as_torch, outputs)

    __call__ = run

    def submit(self, feeds: Mapping[str, Any], *, output_names: Sequence[str] | None = None,
               as_torch: bool = False) -> Future[dict[str, Any]]:
        """Queue a run on the engine's streams; returns a ``concurrent.futures.Future``."""
        tensors = self._prepare(feeds)
        return self._stream_pool().submit(tensors, lambda r: self._finish(tensors, r, output_names, as_torch, None))

    async def run_async(self, feeds: Mapping[str, Any], *, output_names: Sequence[str] | None = None,
                        as_torch: bool = False) -> dict[str, Any]:
        """``await engine.run_async(feeds)`` from asyncio code; the event loop is never blocked."""
        return await asyncio.wrap_future(self.submit(feeds, output_names=output_names, as_torch=as_torch))

    def create_context(self, threads: int | None = None) -> EngineContext:
        """A new execution context sharing this engine's weights (one per thread)."""
        return EngineContext(self, ExecutionContext(self._program, threads))

    def close(self) -> None:
        """Stop the stream workers (they are daemon threads; this is optional)."""
        with self._pool_lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    def _finish(self, tensors: list[torch.Tensor], results: list[torch.Tensor],
                output_names: Sequence[str] | None, as_torch: bool,
                buffers: Mapping[str, Any] | None) -> dict[str, Any]:
        in_ptrs = {t.untyped_storage().data_ptr() for t in tensors if t.numel() > 0}
        out: dict[str, Any] = {}
        wanted = set(output_names) if output_names is not None else None
        if wanted is not None:
            unknown = wanted - {s.name for s in self.outputs}
            if unknown:
                raise FeedError(
                    f"unknown output name(s) {sorted(unknown)}; outputs are "
                    f"{[s.name for s in self.outputs]}"
                )
        for spec, t in zip(self.outputs, results):
            if wanted is not None and spec.name not in wanted:
                continue
            if t.numel() > 0:
                ptr = t.untyped_storage().data_ptr()
                if ptr in self._protected_ptrs or ptr in in_ptrs:
                    t = t.clone()  # never hand out the engine's weights or the caller's input
            if buffers is not None and spec.name in buffers:
                out[spec.name] = _write_into(spec.name, buffers[spec.name], t)
                continue
            out[spec.name] = t if as_torch else to_numpy(t)
        if buffers is not None:
            unknown = set(buffers) - {s.name for s in self.outputs}
            if unknown:
                raise FeedError(f"outputs= names unknown output(s) {sorted(unknown)}")
        return out

    # ------------------------------------------------------------- describe
    @property
    def num_steps(self) -> int:
        return len(self._program.steps)

    def steps(self) -> list[dict[str, Any]]:
        return [
            {
                "index": i,
                "op": s.node.qualified_op,
                "name": s.node.name,
                "origin": list(s.node.origin),
                "outputs": [v.name for v in s.node.outputs],
                "layout": s.node.attrs.get("layout", "any"),
                "tactic": s.node.attrs.get("tactic", ""),
            }
            for i, s in enumerate(self._program.steps)
        ]

    def op_histogram(self) -> dict[str, int]:
        return self.graph.op_histogram()

    def weight_bytes(self) -> int:
        return self.graph.weight_bytes()

    def profile(self, feeds: Mapping[str, Any], runs: int = 10) -> list[dict[str, Any]]:
        """Per-step time (median over ``runs`` after one warm-up run), share of the total, and
        the ONNX nodes each step covers — like trtexec's ``--dumpProfile``."""
        import numpy as np

        from tensorkiln.backends.cpu.program import profile_program

        tensors = self._prepare(feeds)
        for _ in range(2):  # warm-up; chains plan on their first runs
            profile_program(self._program, tensors)
        samples = [profile_program(self._program, tensors)[1] for _ in range(max(1, runs))]
        med = np.median(np.array(samples), axis=0) * 1e3
        total = float(med.sum()) or 1.0
        return [
            {"index": i, "op": s.node.qualified_op, "name": s.node.name, "origin": list(s.node.origin),
             "ms": float(med[i]), "share": float(med[i]) / total}
            for i, s in enumerate(self._program.steps)
        ]

    def memory_plan(self, feeds: Mapping[str, Any]) -> Any:
        """Plan activation memory for inputs shaped like ``feeds`` (runs the engine once)."""
        from tensorkiln.planner import plan_memory

        return plan_memory(self._program, check_feeds(self.inputs, feeds))

    def save(self, path: str | os.PathLike[str]) -> None:
        from tensorkiln.engine.fileformat import save_engine

        save_engine(self, path)

    def __repr__(self) -> str:
        ins = ", ".join(str(s) for s in self.inputs)
        outs = ", ".join(str(s) for s in self.outputs)
        return f"<tensorkiln.Engine {self.num_steps} steps ({ins}) -> ({outs})>"


class EngineContext:
    """An execution context of an engine: ``ctx.run(feeds)`` like ``Engine.run``."""

    def __init__(self, engine: Engine, ctx: ExecutionContext) -> None:
        self.engine = engine
        self.context = ctx

    def run(self, feeds: Mapping[str, Any], *, output_names: Sequence[str] | None = None,
            as_torch: bool = False, outputs: Mapping[str, Any] | None = None) -> dict[str, Any]:
        tensors = self.engine._prepare(feeds)
        return self.engine._finish(tensors, self.context.run(tensors), output_names, as_torch, outputs)


def _write_into(name: str, buf: Any, t: torch.Tensor) -> Any:
    target = torch.from_numpy(buf) if not isinstance(buf, torch.Tensor) else buf
    if tuple(target.shape) != tuple(t.shape) or target.dtype != t.dtype:
        raise FeedError(f"output buffer for {name!r} is {target.dtype} {list(target.shape)}, "
                        f"the result is {t.dtype} {list(t.shape)}")
    target.copy_(t)
    return buf
