"""build(): model → optimized graph → Engine."""

from __future__ import annotations

import os
from typing import Any

import onnx

from tensorkiln.engine.engine import BuildConfig, Engine
from tensorkiln.engine.target import fingerprint
from tensorkiln.engine.tuning import autotune
from tensorkiln.errors import OptionError
from tensorkiln.frontends.onnx_import import import_onnx
from tensorkiln.passes import FUSIONS, PipelineResult, run_pipeline


def build(model: str | os.PathLike[str] | onnx.ModelProto | bytes, **options: Any) -> Engine:
    """Build an engine for this machine's CPU from an ONNX model (path, bytes or ModelProto).

    Options: see ``BuildConfig`` (``optimize``, ``fusion``, ``threads``, ``passes_disabled``).
    """
    if not isinstance(model, (str, os.PathLike, onnx.ModelProto, bytes, bytearray)):
        raise OptionError(
            f"build() takes a path to an .onnx file, its bytes or an onnx.ModelProto; got "
            f"{type(model).__name__}"
        )
    cfg = BuildConfig.from_options(options)
    graph = import_onnx(model)
    result = PipelineResult()
    if cfg.optimize:
        disabled = set(cfg.passes_disabled) | (set() if cfg.fusion else FUSIONS)
        if not cfg.layout:
            disabled.add("select-layout")
        result = run_pipeline(graph, disabled=disabled)
    source = {"model": str(model) if isinstance(model, (str, os.PathLike)) else "<in-memory>"}
    engine = Engine(graph, cfg, fingerprint(), source)
    engine.tuning = autotune(engine)
    engine.build_reports = {
        name: {"fired": r.fired, "why_not": [list(x) for x in r.why_not]} for name, r in result.reports.items()
    }
    return engine
