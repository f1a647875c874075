"""The pass pipeline: one ordered list. Each pass is ``run(graph, report) -> changed``."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tensorkiln.ir import Graph, verify
from tensorkiln.passes import (
    cleanup,
    cse,
    dce,
    fold_bn,
    fuse_conv,
    fuse_gemm,
    fuse_transformer,
    inplace,
    layout,
    merge_parallel,
    quantize,
    quantize_qdq,
)
from tensorkiln.passes.rewrite import RuleReport

Pass = Callable[[Graph, RuleReport], bool]


def _plain(fn: Callable[[Graph], bool]) -> Pass:
    def run(graph: Graph, report: RuleReport) -> bool:
        changed = fn(graph)
        report.fired += int(changed)
        return changed

    return run


# name → pass; the order of this list is the pipeline order
PIPELINE: list[tuple[str, Pass]] = [
    ("eliminate-identity", _plain(cleanup.eliminate_identities)),
    ("fuse-qdq", quantize_qdq.run),  # explicit Q/DQ → int8 kernels, before folding dequantizes the weights
    ("fold-constants", _plain(cleanup.fold_constants)),
    ("dead-code", _plain(dce.run)),
    ("cse", cse.run_cse),
    ("collapse-reshapes", cse.run_collapse),
    ("fold-batchnorm", fold_bn.run),
    ("fuse-conv", fuse_conv.run),
    ("merge-parallel-conv", merge_parallel.run),
    ("fuse-gelu", fuse_transformer.fuse_gelu),
    ("fuse-layernorm", fuse_transformer.fuse_layernorm),
    ("fuse-attention", fuse_transformer.fuse_attention),
    ("fuse-gemm", fuse_gemm.run),
    ("dead-code-final", _plain(dce.run)),
    ("select-layout", layout.run),
    ("inplace-residual", inplace.run),
    ("inplace-residual-int8", quantize.run_inplace),
    ("inplace-elementwise", inplace.run_elementwise),
]
# passes that fuse layers (turned off together by fusion=False)
FUSIONS = {"fold-batchnorm", "fuse-conv", "merge-parallel-conv", "fuse-gelu", "fuse-layernorm", "fuse-attention",
           "fuse-gemm", "fuse-qdq"}


@dataclass
class PipelineResult:
    timings: dict[str, float] = field(default_factory=dict)
    reports: dict[str, RuleReport] = field(default_factory=dict)


def run_pipeline(graph: Graph, disabled: set[str] | None = None, debug: bool = False) -> PipelineResult:
    """Run every enabled pass in order."""
    disabled = disabled or set()
    unknown = disabled - {n for n, _ in PIPELINE}
    if unknown:
        from tensorkiln.errors import OptionError

        raise OptionError(f"unknown pass(es) {sorted(unknown)}; passes are {[n for n, _ in PIPELINE]}")
    res = PipelineResult()
    for name, fn in PIPELINE:
        if name in disabled:
            continue
        t0 = time.perf_counter()
        report = RuleReport()
        fn(graph, report)
        res.timings[name] = time.perf_counter() - t0
        res.reports[name] = report
        if debug:
            verify(graph)
    return res
