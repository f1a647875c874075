"""ConvInteger / MatMulInteger / QLinearConv / QLinearMatMul: exact integer results.

The oracle is the ONNX reference evaluator (and plain int64 numpy): onnxruntime on this
AVX2 machine multiplies uint8 x int8 with ``vpmaddubsw``, whose int16 pair sums saturate,
so its u8s8 results are not exact (seen: MatMulInteger off in half the elements).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.backends.cpu import util
from tests.backends.cpu.util import Inputs

ort = pytest.importorskip("onnxruntime")

def run_both(op: str, inputs: Inputs, attrs: dict[str, Any] | None = None, opset: int = 21,
             consts: tuple[str, ...] = (), oracle: util.Oracle = "ref") -> tuple[np.ndarray, np.ndarray]:
    got = util.node_outputs(op, inputs, attrs, opset=opset, consts=consts)[0]
    ref = util.node_outputs(op, inputs, attrs, opset=opset, consts=consts, oracle=oracle)[0]
    assert got.dtype == ref.dtype and got.shape == ref.shape
    return got, ref


def ints(dtype: Any, *shape: int, seed: int = 0) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.random.default_rng(seed).integers(info.min, int(info.max) + 1, shape).astype(dtype)


@pytest.mark.parametrize("consts", [(), ("w", "wz")])
@pytest.mark.parametrize("wtype", [np.uint8, np.int8])
def test_conv_integer(wtype: Any, consts: tuple[str, ...]) -> None:
    inputs: Inputs = [("x", ints(np.uint8, 1, 4, 7, 8)), ("w", ints(wtype, 6, 2, 3, 3, seed=1)),
                      ("xz", np.array(131, np.uint8)), ("wz", np.array(3, wtype))]
    attrs = {"group": 2, "pads": [1, 0, 2, 1], "strides": [2, 1]}
    got, ref = run_both("ConvInteger", inputs, attrs, opset=10, consts=consts)
    np.testing.assert_array_equal(got, ref)


def test_conv_integer_per_channel_zero_point() -> None:
    # onnxruntime takes a per-tensor weight zero point only; the ONNX reference does both
    inputs: Inputs = [("x", ints(np.uint8, 1, 3, 6, 6)), ("w", ints(np.uint8, 4, 3, 2, 2, seed=1)),
                      ("xz", np.array(100, np.uint8)), ("wz", np.array([1, 2, 3, 4], np.uint8))]
    got, ref = run_both("ConvInteger", inputs, {"pads": [1, 1, 0, 0]}, opset=10, consts=("w", "wz"))
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("consts", [(), ("b", "bz")])
@pytest.mark.parametrize("types", [(np.uint8, np.int8), (np.uint8, np.uint8), (np.int8, np.int8)])
def test_matmul_integer(types: tuple[Any, Any], consts: tuple[str, ...]) -> None:
    at, bt = types
    inputs: Inputs = [("a", ints(at, 2, 5, 64)), ("b", ints(bt, 64, 7, seed=1)),
                      ("az", np.array(7, at)), ("bz", ints(bt, 7, seed=2))]
    got, ref = run_both("MatMulInteger", inputs, opset=10, consts=consts)
    np.testing.assert_array_equal(got, ref)
    a, b, az, bz = (v for _, v in inputs)
    assert a is not None and b is not None
    np.testing.assert_array_equal(got, (a.astype(np.int64) - az) @ (b.astype(np.int64) - bz))


def test_matmul_integer_large_k_is_exact() -> None:
    k = 8192  # |sum| ~ 2.7e8: beyond float32's exact integers, fine in float64
    inputs: Inputs = [("a", np.full((2, k), 255, np.uint8)), ("b", np.full((k, 3), -128, np.int8))]
    got, _ = run_both("MatMulInteger", inputs, opset=10)
    np.testing.assert_array_equal(got, np.full((2, 3), 255 * -128 * k, np.int32))


def _qconv_inputs(xt: Any, per_channel: bool, bias: bool) -> Inputs:
    m = 4
    ws = np.linspace(0.01, 0.03, m).astype(np.float32) if per_channel else np.array(0.02, np.float32)
    return [("x", ints(xt, 1, 3, 7, 7)), ("xs", np.array(0.05, np.float32)),
            ("xz", np.array(10 if xt == np.uint8 else -3, xt)),
            ("w", ints(np.int8, m, 3, 3, 3, seed=1)), ("ws", ws),
            ("wz", np.zeros(m if per_channel else (), np.int8)),
            ("ys", np.array(0.7, np.float32)), ("yz", np.array(120 if xt == np.uint8 else 5, xt)),
            ("b", ints(np.int16, m, seed=2).astype(np.int32) if bias else None)]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("xt", [np.uint8, np.int8])
def test_qlinear_conv(xt: Any, per_channel: bool, bias: bool) -> None:
    inputs = _qconv_inputs(xt, per_channel, bias)
    attrs = {"pads": [1, 1, 0, 2], "strides": [2, 1]}
    got, ref = run_both("QLinearConv", inputs, attrs, opset=10, consts=("w", "ws", "wz", "b"))
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("stype", [np.float32, np.float16])
@pytest.mark.parametrize("qt", [np.uint8, np.int8])
def test_qlinear_matmul(qt: Any, stype: Any) -> None:
    inputs: Inputs = [("a", ints(qt, 2, 3, 16)), ("as", np.array(0.02, stype)), ("az", np.array(3, qt)),
                      ("b", ints(qt, 16, 5, seed=1)), ("bs", np.array(0.03, stype)),
                      ("bz", np.array(-2 if qt == np.int8 else 2, qt)),
                      ("ys", np.array(0.5, stype)), ("yz", np.array(7, qt))]
    got, ref = run_both("QLinearMatMul", inputs, opset=21)
    np.testing.assert_array_equal(got, ref)


def test_qlinear_matmul_uint8_matches_onnxruntime() -> None:
    # u8u8 has no saturation issue in onnxruntime: within one step (it requantizes in float32)
    inputs: Inputs = [("a", ints(np.uint8, 4, 32)), ("as", np.array(0.02, np.float32)),
                      ("az", np.array(3, np.uint8)), ("b", ints(np.uint8, 32, 5, seed=1)),
                      ("bs", np.array(0.03, np.float32)), ("bz", np.array(128, np.uint8)),
                      ("ys", np.array(0.9, np.float32)), ("yz", np.array(100, np.uint8))]
    got, ref = run_both("QLinearMatMul", inputs, opset=21, oracle="ort")
    assert np.abs(got.astype(np.int32) - ref.astype(np.int32)).max() <= 1
