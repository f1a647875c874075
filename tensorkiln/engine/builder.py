"""build(): model → optimized graph → Engine."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import onnx

from tensorkiln.backends.cpu.base import BuildContext
from tensorkiln.backends.cpu.program import lower
from tensorkiln.backends.cpu.registry import REGISTRY
from tensorkiln.engine.engine import BuildConfig, Engine
from tensorkiln.engine.target import fingerprint
from tensorkiln.engine.tuning import autotune
from tensorkiln.errors import OptionError
from tensorkiln.frontends.onnx_import import import_onnx
from tensorkiln.ir import Graph
from tensorkiln.passes import FUSIONS, PipelineResult, run_pipeline
from tensorkiln.quant.precision import precision_step
from tensorkiln.quant.runner import ProgramRunner


def build(model: str | os.PathLike[str] | onnx.ModelProto | bytes, *,
          calibration_data: Iterable[Mapping[str, Any]] | None = None, **options: Any) -> Engine:
    """Build an engine for this machine's CPU from an ONNX model (path, bytes or ModelProto).

    Options: see ``BuildConfig`` (``optimize``, ``fusion``, ``threads``, ``passes_disabled``,
    ``precision``, …). ``calibration_data``: an iterable of feeds (dicts input name → array)
    for ``precision="int8"``; ``accuracy_metric`` may be a callable (see ``quant.metrics``).
    """
    if not isinstance(model, (str, os.PathLike, onnx.ModelProto, bytes, bytearray)):
        raise OptionError(
            f"build() takes a path to an .onnx file, its bytes or an onnx.ModelProto; got "
            f"{type(model).__name__}"
        )
    metric = options.pop("accuracy_metric") if callable(options.get("accuracy_metric")) else None
    cfg = BuildConfig.from_options(options)
    graph = import_onnx(model)
    result = PipelineResult()
    if cfg.optimize:
        disabled = set(cfg.passes_disabled) | (set() if cfg.fusion else FUSIONS)
        if not cfg.layout:
            disabled.add("select-layout")
        result = run_pipeline(graph, disabled=disabled)
    precision = None
    if cfg.precision != "fp32" or cfg.layer_precision:
        precision = precision_step(graph, cfg, calibration_data, metric, _graph_runner)
    source = {"model": str(model) if isinstance(model, (str, os.PathLike)) else "<in-memory>"}
    engine = Engine(graph, cfg, fingerprint(), source)
    engine.tuning = autotune(engine)
    engine.build_reports = {
        name: {"fired": r.fired, "why_not": [list(x) for x in r.why_not]} for name, r in result.reports.items()
    }
    if precision is not None:
        precision.measure(lambda feeds: list(engine.run(feeds, as_torch=True).values()))
        engine.build_reports["precision"] = precision.report
    return engine


def _graph_runner(graph: Graph) -> ProgramRunner:
    """What calibration runs the fp32 graph with (quant never imports the runtime or engine)."""

    def no_subgraphs(g: Graph) -> Any:
        raise OptionError("calibration cannot rebuild layers with subgraphs")

    ctx = BuildContext(compile_subgraph=no_subgraphs)
    return ProgramRunner(graph, lambda g: lower(g, REGISTRY),  # type: ignore[arg-type]
                         lambda n: REGISTRY[(n.domain, n.op_type)](n, ctx))
