"""QuantizeLinear / DequantizeLinear / DynamicQuantizeLinear against onnxruntime (exact)."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import tensorkiln
from tensorkiln.errors import UnsupportedOpError
from tests.backends.cpu import util

ort = pytest.importorskip("onnxruntime")

compare = partial(util.compare, opset=21, exact=True)  # outputs must be equal


def rand(*shape: int, seed: int = 0, scale: float = 3.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


QTYPES = [np.uint8, np.int8, np.uint16, np.int16]


@pytest.mark.parametrize("qtype", QTYPES)
@pytest.mark.parametrize("consts", [(), ("s", "z")])
def test_quantize_per_tensor(qtype: Any, consts: tuple[str, ...]) -> None:
    x = rand(3, 4, 5, scale=100.0)
    x[0, 0, :] = [0.5, 1.5, 2.5, -0.5, -1.5]  # ties round to even
    zp = np.array(3 if qtype in (np.uint8, np.uint16) else -3, dtype=qtype)
    compare("QuantizeLinear", [("x", x), ("s", np.array(0.5, np.float32)), ("z", zp)], consts=consts)


def test_quantize_default_uint8_and_old_opsets() -> None:
    x = rand(2, 6, scale=50.0)
    compare("QuantizeLinear", [("x", x), ("s", np.array(0.3, np.float32))], opset=10)
    compare("QuantizeLinear", [("x", x), ("s", np.array(0.3, np.float32)),
                               ("z", np.array(-5, np.int8))], opset=13)


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("consts", [(), ("s", "z")])
def test_quantize_per_axis(axis: int, consts: tuple[str, ...]) -> None:
    x = rand(3, 4, 5, scale=20.0)
    n = x.shape[axis]
    s = np.linspace(0.05, 0.4, n).astype(np.float32)
    z = np.arange(n).astype(np.int8) - 2
    compare("QuantizeLinear", [("x", x), ("s", s), ("z", z)], {"axis": axis}, opset=13, consts=consts)


@pytest.mark.parametrize("consts", [(), ("s", "z")])
def test_quantize_blocked(consts: tuple[str, ...]) -> None:
    x = rand(4, 10, scale=20.0)
    s = np.abs(rand(4, 3, seed=1, scale=0.3)) + 0.05  # blocks of 4 along axis 1, the last one short
    z = np.random.default_rng(2).integers(0, 20, (4, 3)).astype(np.uint8)
    compare("QuantizeLinear", [("x", x), ("s", s), ("z", z)], {"axis": 1, "block_size": 4}, consts=consts)


def test_quantize_float16() -> None:
    x = rand(3, 8, scale=30.0).astype(np.float16)
    compare("QuantizeLinear", [("x", x), ("s", np.array(0.25, np.float16)), ("z", np.array(7, np.uint8))],
            opset=19)


@pytest.mark.parametrize("qtype", [*QTYPES, np.int32])
@pytest.mark.parametrize("consts", [(), ("s", "z")])
def test_dequantize(qtype: Any, consts: tuple[str, ...]) -> None:
    info = np.iinfo(qtype)
    lo, hi = max(info.min, -100000), min(info.max, 100000)
    x = np.random.default_rng(0).integers(lo, hi, (3, 4, 5)).astype(qtype)
    zp = None if qtype == np.int32 else np.array(lo // 2 + hi // 3, dtype=qtype)
    compare("DequantizeLinear", [("x", x), ("s", np.array(0.037, np.float32)), ("z", zp)], consts=consts)


@pytest.mark.parametrize("axis", [0, 2, -2])
def test_dequantize_per_axis(axis: int) -> None:
    x = np.random.default_rng(0).integers(-128, 127, (3, 4, 5)).astype(np.int8)
    n = x.shape[axis]
    s = np.linspace(0.05, 0.4, n).astype(np.float32)
    z = (np.arange(n) - 2).astype(np.int8)
    compare("DequantizeLinear", [("x", x), ("s", s), ("z", z)], {"axis": axis}, opset=13)
    compare("DequantizeLinear", [("x", x), ("s", s), ("z", z)], {"axis": axis}, opset=13,
            consts=("s", "z"))


def test_dequantize_blocked_and_float16() -> None:
    x = np.random.default_rng(0).integers(0, 255, (6, 4)).astype(np.uint8)
    s = np.abs(rand(2, 4, seed=1, scale=0.3)) + 0.05
    z = np.random.default_rng(2).integers(0, 20, (2, 4)).astype(np.uint8)
    compare("DequantizeLinear", [("x", x), ("s", s), ("z", z)], {"axis": 0, "block_size": 3})
    compare("DequantizeLinear", [("x", x), ("s", s.astype(np.float16)), ("z", z)],
            {"axis": 0, "block_size": 3})


@pytest.mark.parametrize("kind", ["mixed", "positive", "negative", "zeros"])
def test_dynamic_quantize(kind: str) -> None:
    x = rand(4, 7, scale=5.0)
    if kind == "positive":
        x = np.abs(x)
    elif kind == "negative":
        x = -np.abs(x)
    elif kind == "zeros":
        x = np.zeros_like(x)
    compare("DynamicQuantizeLinear", [("x", x)], opset=11, n_out=3)


def test_float8_and_int4_are_unsupported() -> None:
    x = rand(2, 3)
    for code in (onnx.TensorProto.FLOAT8E4M3FN, onnx.TensorProto.INT4):
        node = helper.make_node("QuantizeLinear", ["x", "s"], ["y"], output_dtype=code)
        g = helper.make_graph([node], "q", [helper.make_tensor_value_info("x", 1, [2, 3])],
                              [helper.make_tensor_value_info("y", code, [2, 3])],
                              initializer=[numpy_helper.from_array(np.array(0.5, np.float32), "s")])
        model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
        with pytest.raises(UnsupportedOpError, match="QuantizeLinear"):
            tensorkiln.build(model, optimize=False).run({"x": x})
