"""The Engine: an optimized graph lowered to a program of pre-bound kernels."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from tensorkiln.backends.cpu.program import Program, lower
from tensorkiln.backends.cpu.registry import REGISTRY
from tensorkiln.engine.specs import TensorSpec, check_feeds, to_numpy
from tensorkiln.errors import FeedError, OptionError
from tensorkiln.ir import Graph


@dataclass
class BuildConfig:
    """Every build option, declared once with its default."""

    optimize: bool = True  # run the graph passes (switch off to bisect)
    fusion: bool = True  # layer fusions (BatchNorm folding, Conv+Add+activation, …)
    layout: bool = True  # let convolution regions run channels-last (oneDNN); False keeps NCHW
    planner: bool = True  # release each intermediate after its last reader; False keeps all alive
    threads: int | None = None  # intra-op threads; None = torch's default (all cores)
    passes_disabled: list[str] = field(default_factory=list)

    @staticmethod
    def from_options(options: Mapping[str, Any]) -> BuildConfig:
        known = {f for f in BuildConfig.__dataclass_fields__}
        unknown = [k for k in options if k not in known]
        if unknown:
            raise OptionError(f"unknown build option(s) {unknown}; known options: {sorted(known)}")
        cfg = BuildConfig(**options)
        if cfg.threads is not None and (not isinstance(cfg.threads, int) or cfg.threads < 1):
            raise OptionError(f"threads must be a positive integer, got {cfg.threads!r}")
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
        self._program: Program = lower(graph, REGISTRY, release=config.planner)
        self._protected_ptrs = frozenset(
            t.untyped_storage().data_ptr()
            for t in self._program.template
            if t is not None and t.numel() > 0
        )
        if config.threads is not None:
            torch.set_num_threads(config.threads)

    # ------------------------------------------------------------------ run
    def run(
        self,
        feeds: Mapping[str, Any],
        *,
        output_names: Sequence[str] | None = None,
        as_torch: bool = False,
    ) -> dict[str, Any]:
        """Run the engine. ``feeds`` maps input names to numpy arrays or torch tensors.

        Returns a dict of output name → numpy array (or torch tensor with ``as_torch``).
        """
        tensors = check_feeds(self.inputs, feeds)
        results = self._program(tensors)
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
            out[spec.name] = t if as_torch else to_numpy(t)
        return out

    __call__ = run

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
            }
            for i, s in enumerate(self._program.steps)
        ]

    def op_histogram(self) -> dict[str, int]:
        return self.graph.op_histogram()

    def weight_bytes(self) -> int:
        return self.graph.weight_bytes()

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
