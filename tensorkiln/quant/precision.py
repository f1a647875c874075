"""The builder's precision step: which layers run in int8 (and fp16/bf16), and with which ranges.

``plan_int8`` takes the optimized fp32 graph, a :class:`~tensorkiln.quant.runner.GraphRunner`
over it (handed in by the builder) and the user's calibration data, and returns the
:class:`~tensorkiln.quant.plan.QuantPlan` for ``passes.quantize.apply`` plus a report.

Per-layer overrides (``layer_precision``) match a layer by node name (its own or any ONNX
node it was fused from) or by op type (``Conv``, ``Gemm``, ``MatMul``, or the fused names);
``"fp32"`` keeps it in fp32, ``"int8"`` keeps the budget from moving it back.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from tensorkiln.errors import OptionError
from tensorkiln.ir import Graph, Node
from tensorkiln.quant import cache as calib_cache
from tensorkiln.quant.budget import Evaluator, select
from tensorkiln.quant.calibrate import (
    Calibration,
    TensorRange,
    check_calibrator,
    choose_ranges,
    collect,
    reference_outputs,
)
from tensorkiln.quant.metrics import Outputs, make_metric
from tensorkiln.quant.plan import QuantPlan, candidate_reason, layer_key, layer_kind, plan_storage, tapped_values
from tensorkiln.quant.runner import GraphRunner

PRECISIONS = ("fp32", "fp16", "bf16", "int8", "best")
SPEED_MARGIN = 0.10  # an int8 layer more than 10 % slower than its float kernel stays fp32 (unless strict)
LAYER_PRECISIONS = ("fp32", "fp16", "bf16", "int8")
_ORIGINAL_OPS = {"conv": {"Conv", "FusedConv"}, "gemm": {"Gemm", "MatMul", "FusedGemm"}}


@dataclass
class Int8Result:
    plan: QuantPlan
    report: dict[str, Any] = field(default_factory=dict)
    held_out: list[dict[str, np.ndarray]] = field(default_factory=list)
    reference: Outputs = field(default_factory=list)
    metric: Callable[[Outputs, Outputs], float] | None = None

    def measure(self, run: Callable[[dict[str, np.ndarray]], list[torch.Tensor]]) -> float | None:
        """The metric of the built engine (``run(feeds) -> outputs``) on the held-out samples."""
        if self.metric is None or not self.held_out:
            return None
        got = [run(b) for b in self.held_out]
        score = float(self.metric(self.reference, got))
        self.report["measured_score"] = score
        return score


def override_for(node: Node, overrides: Mapping[str, str]) -> str | None:
    if not overrides:
        return None
    for key in (node.name, *node.origin):
        if key in overrides:
            return overrides[key]
    kind = layer_kind(node)
    for op in ([node.op_type] + sorted(_ORIGINAL_OPS.get(kind or "", set()))):
        if op in overrides:
            return overrides[op]
    return None


def check_options(precision: str, calibrator: str, budget: float | None, overrides: Mapping[str, str]) -> None:
    if precision not in PRECISIONS:
        raise OptionError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    check_calibrator(calibrator)
    if budget is not None and not (isinstance(budget, (int, float)) and 0.0 <= budget <= 1.0):
        raise OptionError(f"accuracy_budget must be a number in [0, 1] (allowed metric loss) or None, got {budget!r}")
    bad = {k: v for k, v in overrides.items() if v not in LAYER_PRECISIONS}
    if bad:
        raise OptionError(f"layer_precision values must be one of {list(LAYER_PRECISIONS)}: {bad}")


def plan_int8(graph: Graph, runner: GraphRunner, data: Iterable[Mapping[str, Any]] | None, *,
              calibrator: str = "auto", cache_path: str | None = None, budget: float | None = 0.01,
              metric: str | Callable[..., float] = "auto", strict: bool = False,
              overrides: Mapping[str, str] | None = None, progress: bool = False,
              chunk: int = 32, max_held_out: int = 64, auto_samples: int = 8, speed_check: bool = True,
              make_kernel: Callable[[Node], Any] | None = None) -> Int8Result:
    overrides = dict(overrides or {})
    candidates: list[Node] = []
    rejected: list[tuple[str, str]] = []
    forced: set[str] = set()
    for n in graph.nodes:
        kind = layer_kind(n)
        if kind is None:
            continue
        why = candidate_reason(n)
        ov = override_for(n, overrides)
        if why is not None:
            rejected.append((n.name, why))
        elif ov is not None and ov != "int8":
            rejected.append((n.name, f"layer_precision says {ov}"))
        else:
            candidates.append(n)
            if ov == "int8":
                forced.add(layer_key(n))
    tapped = [v.name for v in tapped_values(graph, candidates)]
    ranges: dict[str, TensorRange] = {}
    cal: Calibration | None = None
    from_cache = False
    if cache_path and os.path.exists(cache_path):
        cached = calib_cache.load(cache_path)
        missing = [t for t in tapped if t not in cached]
        if missing and data is None:
            # quantize what the cache covers; the other layers stay fp32
            have = [n for n in candidates if all(v.name in cached for v in tapped_values(graph, [n]))]
            if not have:
                raise OptionError(f"calibration cache {cache_path!r} lacks {len(missing)} tensor(s) of this model "
                                  f"(e.g. {missing[:3]}); pass calibration_data to recalibrate")
            rejected += [(n.name, "no range for its tensors in the calibration cache")
                         for n in candidates if n not in have]
            candidates = have
            tapped = [v.name for v in tapped_values(graph, candidates)]
            missing = []
        if not missing:
            ranges = {t: cached[t] for t in tapped}
            from_cache = True
    if data is None and not from_cache:
        raise OptionError("precision='int8' needs calibration_data (an iterable of feeds) or a calibration cache "
                          "(calibration_cache=PATH written by an earlier build); explicitly quantized (Q/DQ) "
                          "models need neither")
    held_out: list[dict[str, np.ndarray]] = []
    if data is not None:
        cal = collect(runner, data, tapped, chunk=chunk, max_held_out=max_held_out, progress=progress)
        held_out = cal.held_out
        if not from_cache:
            eval_b = _first_samples(held_out, auto_samples)
            ranges = choose_ranges(cal, calibrator if eval_b else _fallback(calibrator), runner, eval_b,
                                   reference_outputs(runner, eval_b) if eval_b else [], progress=progress,
                                   evaluate=_quantized_somewhere(graph, candidates))
    rmap = {k: (r.lo, r.hi) for k, r in ranges.items()}
    report: dict[str, Any] = {
        "calibrator": calibrator, "from_cache": from_cache,
        "samples": cal.n_samples if cal else 0, "held_out": cal.n_held_out if cal else 0, "rejected": rejected,
    }
    result = Int8Result(QuantPlan([], rmap), report)
    output_shapes = [v.shape for v in graph.outputs]
    mname, mfn = make_metric(metric, [v.name for v in graph.outputs], output_shapes)
    report["metric"] = mname
    use_budget = bool(held_out) and budget is not None and not strict
    ev: Evaluator | None = None
    if held_out:
        result.held_out, result.metric = held_out, mfn
        result.reference = reference_outputs(runner, held_out)
        ev = Evaluator(runner, graph, rmap, held_out, result.reference, mfn)
    chosen = list(candidates)
    if use_budget:
        assert ev is not None
        sel = select(ev, candidates, budget, forced, progress=progress)
        chosen = sel.int8
        report.update(simulated_score_all_int8=sel.score_all_int8, sensitivity=sel.sensitivity,
                      simulated_score=sel.score)
    elif ev is not None:
        report["simulated_score"] = ev.score(chosen)
    if speed_check and not strict and held_out and chosen and make_kernel is not None:
        from tensorkiln.quant.speed import time_layers

        timing = time_layers(graph, runner, make_kernel, chosen, rmap, _first_samples(held_out, 1)[0])
        slower = {k for k, (_, _, r) in timing.items() if r > 1.0 + SPEED_MARGIN}
        if slower:
            chosen = [n for n in chosen if layer_key(n) not in slower or layer_key(n) in forced]
            if ev is not None:
                report["simulated_score"] = ev.score(chosen)
        names = {layer_key(n): n.name for n in candidates}
        report["speed_ms"] = {names[k]: [round(f, 4), round(q, 4)] for k, (f, q, _) in timing.items()}
        report["kept_fp32_for_speed"] = [names[k] for k in sorted(slower) if k not in forced]
    if ev is not None:
        report["evaluations"] = ev.count
    if use_budget:
        report["kept_fp32_for_accuracy"] = [n.name for n in candidates if n not in chosen]
    if cache_path and cal is not None and not from_cache:
        calib_cache.save(cache_path, ranges, cal.n_samples)
    report["methods"] = _method_counts({k: r for k, r in ranges.items() if k in _quantized_somewhere(graph, chosen)})
    report["budget"] = budget
    result.plan.layers = [layer_key(n) for n in chosen]
    report["layers"] = {n.name: ("int8" if n in chosen else "fp32") for n in graph.nodes if layer_kind(n)}
    return result


def _fallback(calibrator: str) -> str:
    return "entropy" if calibrator == "auto" else calibrator


def _first_samples(batches: list[dict[str, np.ndarray]], n: int) -> list[dict[str, np.ndarray]]:
    """The first held-out batch, cut to ``n`` samples: what ``auto`` evaluates methods on (one run
    per candidate range)."""
    if not batches:
        return []
    return [{name: a[:n] for name, a in batches[0].items()}]


def _quantized_somewhere(graph: Graph, candidates: list[Node]) -> set[str]:
    """Tensors an all-candidates int8 plan quantizes (the others' ranges are never used)."""
    st = plan_storage(graph, candidates)
    names = {v.name for n in graph.nodes for v in n.outputs if id(v) in st.stored}
    for n, i in st.edges:
        v = n.inputs[i]
        if v is not None:
            names.add(v.name)
    return names


def _method_counts(ranges: Mapping[str, TensorRange]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in ranges.values():
        counts[r.method] = counts.get(r.method, 0) + 1
    return dict(sorted(counts.items()))


@dataclass
class PrecisionStep:
    """What the builder's precision step did; ``report`` goes to ``engine.build_reports["precision"]``."""

    report: dict[str, Any]
    int8: Int8Result | None = None

    def measure(self, run: Callable[[dict[str, np.ndarray]], list[torch.Tensor]]) -> None:
        if self.int8 is not None:
            score = self.int8.measure(run)
            if score is not None:
                self.report["measured_score"] = score


def precision_step(graph: Graph, cfg: Any, data: Iterable[Mapping[str, Any]] | None,
                   metric: Callable[..., float] | None, make_runner: Callable[[Graph], GraphRunner]) -> PrecisionStep:
    """Apply ``cfg.precision`` (a BuildConfig) to the optimized ``graph`` in place."""
    from tensorkiln.quant import lowp

    overrides = dict(cfg.layer_precision or {})
    check_options(cfg.precision, cfg.calibrator, cfg.accuracy_budget, overrides)
    report: dict[str, Any] = {"precision": cfg.precision, "strict": cfg.strict, "fired": 0, "why_not": []}
    step = PrecisionStep(report)
    wants_float = cfg.precision in ("fp16", "bf16", "best") or any(v in ("fp16", "bf16") for v in overrides.values())
    if wants_float:
        report.update(lowp.decide(cfg.precision, cfg.strict, overrides))
    if cfg.calibrator == "dynamic" and (cfg.precision in ("int8", "best") or "int8" in overrides.values()):
        from tensorkiln.passes import quantize as quantize_pass

        layers = [n for n in graph.nodes if layer_kind(n) == "gemm" and candidate_reason(n) is None
                  and override_for(n, overrides) in (None, "int8")]
        done = quantize_pass.apply_dynamic(graph, layers)
        report.update(fired=len(done), calibrator="dynamic",
                      layers={n.name: ("int8-dynamic" if n.name in done else "fp32")
                              for n in graph.nodes if layer_kind(n) or n.op_type == "DynQGemm"})
    elif cfg.precision in ("int8", "best") or "int8" in overrides.values():
        has_candidates = any(layer_kind(n) and candidate_reason(n) is None for n in graph.nodes)
        if has_candidates and (data is not None or cfg.calibration_cache):
            from tensorkiln.passes import quantize as quantize_pass

            runner = make_runner(graph)
            res = plan_int8(graph, runner, data, calibrator=cfg.calibrator,
                            make_kernel=getattr(runner, "make_kernel", None), speed_check=cfg.opt_level >= 1,
                            cache_path=cfg.calibration_cache or None, budget=cfg.accuracy_budget,
                            metric=metric if metric is not None else cfg.accuracy_metric, strict=cfg.strict,
                            overrides=overrides, progress=cfg.progress)
            applied = quantize_pass.apply(graph, res.plan)
            report.update(res.report)
            report["uint8_tensors"] = applied["uint8_tensors"]
            report["fired"] = len(applied["int8"])
            report["why_not"] = [list(x) for x in res.report.get("rejected", [])]
            step.int8 = res
        elif has_candidates and cfg.precision == "best":
            report.setdefault("notes", []).append("int8: no calibration_data or calibration_cache given, so no layer "
                                                  "was considered for int8")
        elif has_candidates and cfg.precision == "int8" and not _explicitly_quantized(graph):
            raise OptionError("precision='int8' needs calibration_data (an iterable of feeds) or an existing "
                              "calibration_cache; explicitly quantized (Q/DQ) models need neither")
    fmt = report.get("float_precision")
    if fmt in ("fp16", "bf16"):
        def wanted(node: Node) -> bool:
            ov = override_for(node, overrides)
            return ov == fmt or (ov is None and cfg.precision in (fmt, "best"))

        converted = lowp.convert(graph, fmt, wanted)
        report["fired"] += len(converted)
        layers = report.setdefault("layers", {})
        layers.update({name: fmt for name in converted})
    return step


def _explicitly_quantized(graph: Graph) -> bool:
    return any(n.domain == "tensorkiln" and n.op_type in ("QConv", "QGemm") for n in graph.nodes)
