"""Random generators: shapes, types, seeds and rough statistics."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import tensorkiln


def _model(node: onnx.NodeProto, inputs: list[onnx.ValueInfoProto], out_type: int) -> onnx.ModelProto:
    g = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("y", out_type, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize(
    ("op", "kw", "dt", "npdt"),
    [
        ("RandomNormal", {"mean": 2.0, "scale": 0.5}, TensorProto.FLOAT, np.float32),
        ("RandomNormal", {}, TensorProto.DOUBLE, np.float64),
        ("RandomUniform", {"low": -1.0, "high": 3.0}, TensorProto.FLOAT16, np.float16),
        ("RandomUniform", {}, TensorProto.FLOAT, np.float32),
    ],
)
def test_random_shape_dtype_stats(op: str, kw: dict[str, float], dt: int, npdt: type) -> None:
    node = helper.make_node(op, [], ["y"], shape=[200, 50], dtype=dt, **kw)
    y = tensorkiln.build(_model(node, [], dt)).run({})["y"]
    assert y.shape == (200, 50)
    assert y.dtype == npdt
    y = y.astype(np.float64)
    if op == "RandomNormal":
        assert abs(y.mean() - kw.get("mean", 0.0)) < 0.05
        assert abs(y.std() - kw.get("scale", 1.0)) < 0.05
    else:
        lo, hi = kw.get("low", 0.0), kw.get("high", 1.0)
        assert y.min() >= lo and y.max() <= hi
        assert abs(y.mean() - (lo + hi) / 2) < 0.05 * (hi - lo)


@pytest.mark.parametrize("op", ["RandomNormalLike", "RandomUniformLike"])
def test_like_takes_shape_and_dtype(op: str) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.DOUBLE, [3, 4])
    y = tensorkiln.build(_model(helper.make_node(op, ["x"], ["y"]), [x], TensorProto.DOUBLE)).run(
        {"x": np.zeros((3, 4))})["y"]
    assert y.shape == (3, 4) and y.dtype == np.float64
    node = helper.make_node(op, ["x"], ["y"], dtype=TensorProto.FLOAT)
    y = tensorkiln.build(_model(node, [x], TensorProto.FLOAT)).run({"x": np.zeros((3, 4))})["y"]
    assert y.dtype == np.float32


def test_seed_is_reproducible() -> None:
    def draws(seed: float) -> list[np.ndarray]:
        node = helper.make_node("RandomNormal", [], ["y"], shape=[8], seed=seed)
        eng = tensorkiln.build(_model(node, [], TensorProto.FLOAT))
        return [eng.run({})["y"] for _ in range(2)]

    a, b, c = draws(3.0), draws(3.0), draws(4.0)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], a[1])  # the generator advances between runs
    assert not np.array_equal(a[0], c[0])


def test_bernoulli_extremes_and_dtype() -> None:
    p = np.array([[0.0, 1.0, 1.0], [0.0, 0.0, 1.0]], np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = tensorkiln.build(_model(helper.make_node("Bernoulli", ["x"], ["y"], seed=1.0), [x],
                                TensorProto.FLOAT)).run({"x": p})["y"]
    np.testing.assert_array_equal(y, p)
    assert y.dtype == np.float32
    node = helper.make_node("Bernoulli", ["x"], ["y"], dtype=TensorProto.BOOL)
    y = tensorkiln.build(_model(node, [x], TensorProto.BOOL)).run({"x": p})["y"]
    assert y.dtype == np.bool_
    np.testing.assert_array_equal(y, p.astype(bool))
    half = np.full((100, 100), 0.5, np.float32)
    xx = helper.make_tensor_value_info("x", TensorProto.FLOAT, [100, 100])
    y = tensorkiln.build(_model(helper.make_node("Bernoulli", ["x"], ["y"]), [xx],
                                TensorProto.FLOAT)).run({"x": half})["y"]
    assert 0.45 < y.mean() < 0.55


@pytest.mark.parametrize(("dt", "npdt"), [(None, np.int32), (TensorProto.INT64, np.int64)])
def test_multinomial(dt: int | None, npdt: type) -> None:
    logits = np.array([[0.0, -1e4, -1e4], [-1e4, -1e4, 0.0]], np.float32)
    kw = {} if dt is None else {"dtype": dt}
    node = helper.make_node("Multinomial", ["x"], ["y"], sample_size=5, seed=2.0, **kw)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = tensorkiln.build(_model(node, [x], dt or TensorProto.INT32)).run({"x": logits})["y"]
    assert y.shape == (2, 5) and y.dtype == npdt
    np.testing.assert_array_equal(y, [[0] * 5, [2] * 5])
