"""Explicitly quantized models (onnxruntime quantize_static, QDQ and QOperator formats) run in int8.

The reference is onnxruntime. With 7-bit weights (``reduce_range=True``) onnxruntime's int8
kernels are exact and so are ours: outputs agree to a few steps of the output's quantization
(the fused residual sum skips one rounding). With full-range 8-bit weights onnxruntime's
optimized session on CPUs without VNNI saturates int16 pair sums (vpmaddubsw) and drifts from
the model's own semantics, so there the reference is the same session with graph optimizations
off (QDQ executed as written, in float).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

import tensorkiln
from tensorkiln.quant.qparams import has_vnni
from tests.quant.models import images, small_cnn

ort = pytest.importorskip("onnxruntime")
quantization = pytest.importorskip("onnxruntime.quantization")


def _quantize(tmp_path: Path, fmt: str, per_channel: bool, reduce_range: bool) -> tuple[Path, float]:
    src = tmp_path / "fp32.onnx"
    onnx.save(small_cnn(), src)
    xc = images(32)

    class Reader(quantization.CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"x": xc[i:i + 8]} for i in range(0, 32, 8)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    out = tmp_path / f"q_{fmt}_{per_channel}_{reduce_range}.onnx"
    quantization.quantize_static(
        str(src), str(out), Reader(),
        quant_format=quantization.QuantFormat.QDQ if fmt == "qdq" else quantization.QuantFormat.QOperator,
        per_channel=per_channel, reduce_range=reduce_range, activation_type=quantization.QuantType.QUInt8,
        weight_type=quantization.QuantType.QInt8, calibrate_method=quantization.CalibrationMethod.MinMax)
    m = onnx.load(out)
    lsb = float(next(onnx.numpy_helper.to_array(i) for i in m.graph.initializer if i.name == "logits_scale"))
    return out, lsb


def _ort(path: Path, x: np.ndarray, optimized: bool) -> np.ndarray:
    so = ort.SessionOptions()
    if not optimized:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("reduce_range", [False, True])
def test_qdq_model_fuses_into_int8_kernels_and_matches_onnxruntime(tmp_path: Path, per_channel: bool,
                                                                   reduce_range: bool) -> None:
    path, lsb = _quantize(tmp_path, "qdq", per_channel, reduce_range)
    x = images(16, seed=5)
    e = tensorkiln.build(str(path))
    ops = [s["op"] for s in e.steps()]
    assert ops.count("tensorkiln::QConv") == 3 and ops.count("tensorkiln::QGemm") == 2, ops
    assert "tensorkiln::QMaxPool" in ops and "Add" not in ops and "Conv" not in ops
    # the pool and the Flatten after it move codes: no float round trip between the last conv and fc1
    assert "tensorkiln::QGlobalAveragePool" in ops and "GlobalAveragePool" not in ops
    i = ops.index("tensorkiln::QGlobalAveragePool")
    assert ops[i:i + 3] == ["tensorkiln::QGlobalAveragePool", "Flatten", "tensorkiln::QGemm"], ops
    got = e.run({"x": x})["logits"]
    exact = _ort(path, x, optimized=False)  # the model's semantics
    assert float(np.abs(got - exact).max()) <= 3 * lsb + 1e-6
    if reduce_range or has_vnni():
        assert float(np.abs(got - _ort(path, x, optimized=True)).max()) <= 3 * lsb + 1e-6
    assert (got.argmax(1) == exact.argmax(1)).mean() >= 0.9
    narrowed = [r for _, r in e.build_reports["fuse-qdq"]["why_not"] if "re-rounded" in r]
    assert bool(narrowed) == (not reduce_range and not has_vnni())


@pytest.mark.parametrize("per_channel", [False, True])
def test_qoperator_model_runs_and_matches_onnxruntime(tmp_path: Path, per_channel: bool) -> None:
    path, lsb = _quantize(tmp_path, "qop", per_channel, reduce_range=True)
    x = images(16, seed=5)
    e = tensorkiln.build(str(path))
    ops = [s["op"] for s in e.steps()]
    assert ops.count("tensorkiln::QConv") == 3 and ops.count("tensorkiln::QGemm") == 2, ops
    assert "tensorkiln::QMaxPool" in ops and "com.microsoft::QLinearAdd" not in ops  # residual fused
    got = e.run({"x": x})["logits"]
    assert float(np.abs(got - _ort(path, x, optimized=True)).max()) <= 3 * lsb + 1e-6
    # the exact integer kernels (fusion off) agree with onnxruntime to the step
    plain = tensorkiln.build(str(path), fusion=False)
    assert "QLinearConv" in {s["op"] for s in plain.steps()}
    assert float(np.abs(plain.run({"x": x})["logits"] - _ort(path, x, optimized=True)).max()) <= lsb + 1e-6


def test_qdq_without_fusion_runs_as_written(tmp_path: Path) -> None:
    path, lsb = _quantize(tmp_path, "qdq", True, True)
    x = images(8, seed=2)
    e = tensorkiln.build(str(path), fusion=False)
    assert not any(s["op"].startswith("tensorkiln::Q") for s in e.steps())
    np.testing.assert_allclose(e.run({"x": x})["logits"], _ort(path, x, optimized=False), atol=lsb + 1e-5)
