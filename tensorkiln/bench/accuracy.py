"""Accuracy: the engine's outputs against a reference, per output, Polygraphy style.

References: ``fp32`` (the same model built with ``optimize=False``: no fusion, no reduced
precision), ``ort`` (onnxruntime) and ``onnx-reference`` (``onnx.reference.ReferenceEvaluator``).
Every output gets abs-error statistics, the relative RMS error, cosine similarity, top-k
agreement for 2-D outputs, a pass/fail against its tolerance, and the tolerances that would
have passed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from tensorkiln.errors import OptionError

REFERENCES = ("fp32", "ort", "onnx-reference")
ATOL_GRID = (0.0, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


@dataclass
class Tolerance:
    rtol: float
    atol: float

    def __str__(self) -> str:
        return f"rtol={self.rtol:g}, atol={self.atol:g}"


@dataclass
class OutputReport:
    name: str
    shape: tuple[int, ...]
    ref_shape: tuple[int, ...]
    tolerance: Tolerance
    passed: bool
    stats: dict[str, float] = field(default_factory=dict)
    # atol → the smallest rtol that passes with it (inf: no rtol does)
    would_pass: list[tuple[float, float]] = field(default_factory=list)
    topk: dict[str, float] = field(default_factory=dict)
    problem: str = ""  # shape or dtype mismatch, NaN pattern

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "reference_shape": list(self.ref_shape),
                "rtol": self.tolerance.rtol, "atol": self.tolerance.atol, "passed": self.passed,
                "stats": self.stats, "topk": self.topk, "problem": self.problem,
                "would_pass": [{"atol": a, "min_rtol": (r if math.isfinite(r) else None)} for a, r in self.would_pass]}


def error_stats(got: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Abs-error statistics, relative errors and cosine similarity (float64).

    ``rel_rms`` is RMS error / RMS of the reference; ``rel_err`` is RMS error / standard
    deviation of the reference, which a zero point or an offset does not dilute (a uint8
    tensor and its dequantized float get the same figure)."""
    a = np.asarray(got, np.float64).ravel()
    b = np.asarray(ref, np.float64).ravel()
    if a.size == 0:
        return {"max_abs": 0.0, "mean_abs": 0.0, "median_abs": 0.0, "q90_abs": 0.0, "q99_abs": 0.0,
                "q999_abs": 0.0, "rel_rms": 0.0, "rel_err": 0.0, "cosine": 1.0, "max_ref": 0.0}
    both_nan = np.isnan(a) & np.isnan(b)
    err = np.abs(a - b)
    err[both_nan] = 0.0
    err[np.isnan(err)] = np.inf  # NaN on one side only
    fin = np.isfinite(a) & np.isfinite(b)
    q = np.quantile(err, [0.5, 0.9, 0.99, 0.999]) if np.isfinite(err).all() else [float("inf")] * 4
    rms_ref = float(np.sqrt(np.mean(np.square(b[fin])))) if fin.any() else 0.0
    spread = float(np.std(b[fin])) if fin.any() else 0.0
    rms_err = float(np.sqrt(np.mean(np.square(err)))) if np.isfinite(err).all() else float("inf")
    na, nb = float(np.linalg.norm(a[fin])), float(np.linalg.norm(b[fin]))
    if na == 0 and nb == 0:
        cos = 1.0
    elif na == 0 or nb == 0:
        cos = 0.0
    else:
        cos = float(np.dot(a[fin], b[fin]) / (na * nb))
    return {"max_abs": float(err.max()), "mean_abs": float(err.mean()), "median_abs": float(q[0]),
            "q90_abs": float(q[1]), "q99_abs": float(q[2]), "q999_abs": float(q[3]),
            "rel_rms": _ratio(rms_err, rms_ref), "rel_err": _ratio(rms_err, spread if spread > 0 else rms_ref),
            "cosine": cos, "max_ref": float(np.max(np.abs(b[fin]))) if fin.any() else 0.0}


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else (0.0 if num == 0 else float("inf"))


def min_rtol(got: np.ndarray, ref: np.ndarray, atol: float) -> float:
    """Smallest rtol with ``|got - ref| <= atol + rtol * |ref|`` everywhere (inf if none)."""
    a = np.asarray(got, np.float64)
    b = np.asarray(ref, np.float64)
    err = np.abs(a - b)
    err[np.isnan(a) & np.isnan(b)] = 0.0
    if np.isnan(err).any():
        return float("inf")
    over = err > atol
    if not over.any():
        return 0.0
    mag = np.abs(b[over])
    if (mag == 0).any():
        return float("inf")
    return float(np.max((err[over] - atol) / mag))


def topk_agreement(got: np.ndarray, ref: np.ndarray, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """For 2-D (rows × classes) outputs: share of rows whose top-1 matches, and mean top-k overlap."""
    if got.ndim != 2 or got.shape != ref.shape or got.dtype.kind not in "fc":
        return {}
    out: dict[str, float] = {}
    for k in ks:
        if k > got.shape[1]:
            continue
        ta = np.argsort(-got, axis=1, kind="stable")[:, :k]
        tb = np.argsort(-ref, axis=1, kind="stable")[:, :k]
        if k == 1:
            out["top1_match"] = float(np.mean(ta[:, 0] == tb[:, 0]))
        else:
            out[f"top{k}_overlap"] = float(np.mean([len(set(x) & set(y)) / k for x, y in zip(ta, tb)]))
    return out


def compare_output(name: str, got: np.ndarray, ref: np.ndarray, tol: Tolerance) -> OutputReport:
    got, ref = np.asarray(got), np.asarray(ref)
    rep = OutputReport(name, tuple(got.shape), tuple(ref.shape), tol, False)
    if got.shape != ref.shape:
        rep.problem = f"shape {list(got.shape)} differs from the reference's {list(ref.shape)}"
        return rep
    if got.dtype.kind not in "fciub" or ref.dtype.kind not in "fciub":
        rep.passed = bool(np.array_equal(got, ref))
        rep.problem = "" if rep.passed else "non-numeric outputs differ"
        return rep
    rep.stats = error_stats(got, ref)
    rep.topk = topk_agreement(got, ref)
    rep.would_pass = [(a, min_rtol(got, ref, a)) for a in ATOL_GRID]
    rep.passed = min_rtol(got, ref, tol.atol) <= tol.rtol
    return rep


# ------------------------------------------------------------------ references
def load_model(model: str | os.PathLike[str] | onnx.ModelProto) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    return onnx.load(str(model))


def with_outputs(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose graph also outputs the tensors ``names`` (typed where inference knows)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    try:
        inferred = onnx.shape_inference.infer_shapes(m)
        vi = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    except Exception:
        vi = {}
    for n in names:
        if n in have:
            continue
        if n in vi and vi[n].type.HasField("tensor_type"):
            t = vi[n].type.tensor_type
            m.graph.output.append(onnx.helper.make_tensor_value_info(n, t.elem_type, None))
        else:
            m.graph.output.append(onnx.ValueInfoProto(name=n))
        have.add(n)
    return m


class Reference:
    """Runs the reference for a model; ``run(feeds, extra)`` also returns intermediate tensors."""

    def __init__(self, kind: str, model: str | os.PathLike[str] | onnx.ModelProto, threads: int | None = None):
        if kind not in REFERENCES:
            raise OptionError(f"unknown reference {kind!r}; references: {', '.join(REFERENCES)}")
        self.kind = kind
        self.model = load_model(model)
        self.threads = threads

    @property
    def label(self) -> str:
        return {"fp32": "fp32 engine (optimize=False)", "ort": "onnxruntime",
                "onnx-reference": "onnx.reference.ReferenceEvaluator"}[self.kind]

    def output_names(self) -> list[str]:
        return [o.name for o in self.model.graph.output]

    def run(self, feeds: Mapping[str, np.ndarray], extra: Sequence[str] = ()) -> dict[str, np.ndarray]:
        names = self.output_names() + [n for n in extra if n not in self.output_names()]
        model = with_outputs(self.model, extra) if extra else self.model
        if self.kind == "ort":
            try:
                import onnxruntime as ort
            except ImportError:
                raise OptionError("--reference ort needs onnxruntime: pip install onnxruntime") from None
            so = ort.SessionOptions()
            if self.threads:
                so.intra_op_num_threads = self.threads
            sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
            return dict(zip(names, sess.run(names, dict(feeds))))
        if self.kind == "onnx-reference":
            from onnx.reference import ReferenceEvaluator

            res = ReferenceEvaluator(model).run(names, dict(feeds))
            return dict(zip(names, res))
        from tensorkiln.engine import build

        opts: dict[str, Any] = {"optimize": False}
        if self.threads:
            opts["threads"] = self.threads
        eng = build(model, **opts)
        out = eng.run(feeds)
        return {n: out[n] for n in names if n in out}


def build_under_test(model: str | os.PathLike[str] | onnx.ModelProto, precision: str | None = None,
                     calibration_data: Sequence[Mapping[str, np.ndarray]] | None = None, **options: Any) -> Any:
    """The engine under test; ``precision`` only where this build of tensorkiln has that option.

    ``calibration_data`` (feeds the builder observes to choose int8 ranges) is passed on for
    reduced precisions only."""
    from tensorkiln.engine import BuildConfig, build

    if precision and precision != "fp32":
        if "precision" not in BuildConfig.__dataclass_fields__:
            raise OptionError(f"--precision {precision}: this tensorkiln cannot build reduced-precision engines "
                              f"yet (BuildConfig has no 'precision' option); compare the fp32 engine instead")
        options["precision"] = precision
        if calibration_data is not None:
            return build(model, calibration_data=list(calibration_data), **options)
    return build(model, **options)


def compare_outputs(got: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray], default: Tolerance,
                    per_output: Mapping[str, Tolerance] | None = None) -> list[OutputReport]:
    per_output = per_output or {}
    unknown = set(per_output) - set(got)
    if unknown:
        raise OptionError(f"--tol names unknown output(s) {sorted(unknown)}; outputs are {sorted(got)}")
    reps = []
    for name, g in got.items():
        if name not in ref:
            r = OutputReport(name, tuple(np.shape(g)), (), per_output.get(name, default), False)
            r.problem = "the reference has no output of this name"
            reps.append(r)
            continue
        reps.append(compare_output(name, g, ref[name], per_output.get(name, default)))
    return reps
