"""INT8 on a trained network: a small CNN on scikit-learn's digits (8x8 upscaled to 28x28),
trained here with a fixed seed, calibrated on its training images, evaluated on held-out
test images — against fp32 and against onnxruntime's static quantization of the same model."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import tensorkiln
from tests.quant.digits import Digits, train

pytest.importorskip("sklearn", reason="scikit-learn provides the digits data set")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def digits() -> Digits:
    t0 = time.perf_counter()
    d = train()
    print(f"trained the digits CNN in {time.perf_counter() - t0:.1f} s")
    return d


def _feeds(x: np.ndarray, bs: int) -> Iterator[dict[str, np.ndarray]]:
    for i in range(0, len(x), bs):
        yield {"x": x[i:i + bs]}


def test_int8_accuracy_within_0_3_points_and_ort_for_comparison(digits: Digits, tmp_path: Path) -> None:
    fp = tensorkiln.build(digits.model)
    acc_fp = digits.accuracy(fp.run({"x": digits.x_test})["logits"])
    assert acc_fp >= 0.98, f"the trained fp32 network is too weak ({acc_fp:.4f})"
    t0 = time.perf_counter()
    # opt_level=0: int8 wherever accurate (no timing against fp32), to show int8's accuracy on every layer
    q = tensorkiln.build(digits.model, precision="int8", calibration_data=_feeds(digits.x_train, 32),
                         calibration_cache=str(tmp_path / "digits.calib.json"), opt_level=0)
    t_build = time.perf_counter() - t0
    acc_q = digits.accuracy(q.run({"x": digits.x_test})["logits"])
    rep = q.build_reports["precision"]
    ort_acc = _ort_static_minmax(digits, tmp_path)
    print(f"\ndigits test accuracy ({len(digits.y_test)} images): fp32 {acc_fp:.4f}, tensorkiln int8 {acc_q:.4f} "
          f"(drop {100 * (acc_fp - acc_q):.2f} points; build {t_build:.1f} s; {rep['fired']} int8 layers; "
          f"methods {rep['methods']}), onnxruntime static MinMax QDQ {ort_acc:.4f} "
          f"(drop {100 * (acc_fp - ort_acc):.2f} points)")
    assert rep["fired"] >= 5, rep["layers"]
    assert acc_fp - acc_q <= 0.003
    doc = json.loads((tmp_path / "digits.calib.json").read_text())
    assert doc["format"] == "tensorkiln-calibration" and doc["samples"] == len(digits.x_train)
    # the cache alone rebuilds the same engine, without calibration data
    again = tensorkiln.build(digits.model, precision="int8", calibration_cache=str(tmp_path / "digits.calib.json"),
                             accuracy_budget=None, layer_precision={n: p for n, p in rep["layers"].items()})
    np.testing.assert_array_equal(again.run({"x": digits.x_test})["logits"], q.run({"x": digits.x_test})["logits"])


def _ort_static_minmax(d: Digits, tmp_path: Path) -> float:
    ort = pytest.importorskip("onnxruntime")
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = _feeds(d.x_train, 32)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    src, pre, out = tmp_path / "digits.onnx", tmp_path / "digits_pre.onnx", tmp_path / "digits_qdq.onnx"
    src.write_bytes(d.model)
    quant_pre_process(str(src), str(pre))
    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    acc = d.accuracy(sess.run(None, {"x": d.x_test})[0])
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    exact = d.accuracy(ort.InferenceSession(str(out), so, providers=["CPUExecutionProvider"])
                       .run(None, {"x": d.x_test})[0])
    ours = d.accuracy(tensorkiln.build(str(out)).run({"x": d.x_test})["logits"])
    print(f"\nonnxruntime's QDQ model: onnxruntime {acc:.4f}; the same model as written (onnxruntime without "
          f"graph optimizations, float Q/DQ) {exact:.4f}; imported by tensorkiln (int8 kernels) {ours:.4f}")
    return acc


def test_calibration_identical_for_batch_sizes_1_8_32(digits: Digits, tmp_path: Path) -> None:
    x = digits.x_train[:320]
    docs, outs = [], []
    for bs in (1, 8, 32):
        path = tmp_path / f"bs{bs}.json"
        e = tensorkiln.build(digits.model, precision="int8", calibration_data=_feeds(x, bs),
                             calibration_cache=str(path), opt_level=0)
        docs.append(json.loads(path.read_text()))
        outs.append(e.run({"x": digits.x_test})["logits"])
    assert docs[0] == docs[1] == docs[2]
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])
