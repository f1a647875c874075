"""Normalization kernels against onnxruntime on small random tensors."""

from __future__ import annotations

import numpy as np
import pytest

import tensorkiln
from tests.backends.cpu.util import Inputs, compare, rand, single_node

ort = pytest.importorskip("onnxruntime")

def _bn_inputs(c: int, x_shape: tuple[int, ...]) -> Inputs:
    var = np.abs(rand(c, seed=4)) + 0.1
    return [("x", rand(*x_shape)), ("s", rand(c, seed=1)), ("b", rand(c, seed=2)),
            ("m", rand(c, seed=3)), ("v", var)]


@pytest.mark.parametrize("consts", [("s", "b", "m", "v"), ()])
@pytest.mark.parametrize("shape", [(2, 3), (2, 3, 5), (2, 3, 4, 5), (1, 3, 2, 3, 4)])
def test_batchnorm(shape: tuple[int, ...], consts: tuple[str, ...]) -> None:
    compare("BatchNormalization", _bn_inputs(3, shape), {"epsilon": 1e-3}, consts=consts)


@pytest.mark.parametrize("opset", [7, 9])
def test_batchnorm_old_opsets(opset: int) -> None:
    compare("BatchNormalization", _bn_inputs(3, (2, 3, 4, 4)), opset=opset, consts=("s", "b", "m", "v"))


@pytest.mark.parametrize("consts", [("s", "b", "m", "v"), ()])
def test_batchnorm_opset7_per_activation(consts: tuple[str, ...]) -> None:
    var = np.abs(rand(3, 4, seed=4)) + 0.1
    inputs: Inputs = [("x", rand(2, 3, 4)), ("s", rand(3, 4, seed=1)), ("b", rand(3, 4, seed=2)),
                      ("m", rand(3, 4, seed=3)), ("v", var)]
    compare("BatchNormalization", inputs, {"spatial": 0}, opset=7, consts=consts)


def test_batchnorm_training_mode() -> None:
    compare("BatchNormalization", _bn_inputs(3, (4, 3, 5, 2)), {"training_mode": 1, "momentum": 0.8},
            opset=15, n_out=3)


def test_instancenorm() -> None:
    compare("InstanceNormalization", [("x", rand(2, 3, 4, 5)), ("s", rand(3, seed=1)),
                                      ("b", rand(3, seed=2))], {"epsilon": 1e-3})
    compare("InstanceNormalization", [("x", rand(2, 3, 7)), ("s", rand(3, seed=1)),
                                      ("b", rand(3, seed=2))], consts=("s", "b"))


@pytest.mark.parametrize("axis", [-1, -2, 1, 0])
def test_layernorm(axis: int) -> None:
    x = rand(2, 3, 4)
    nshape = x.shape[axis:]
    inputs: Inputs = [("x", x), ("s", rand(*nshape, seed=1)), ("b", rand(*nshape, seed=2))]
    compare("LayerNormalization", inputs, {"axis": axis, "epsilon": 1e-3}, n_out=3)
    compare("LayerNormalization", inputs, {"axis": axis}, consts=("s", "b"))
    compare("LayerNormalization", inputs[:2], {"axis": axis})


def test_layernorm_broadcast_scale() -> None:
    x = rand(2, 3, 4)
    compare("LayerNormalization", [("x", x), ("s", rand(1, 4, seed=1)), ("b", rand(4, seed=2))],
            {"axis": -2})


@pytest.mark.parametrize("opset", [18, 21])
def test_groupnorm(opset: int) -> None:
    x = rand(2, 6, 3, 2)
    n = 2 if opset < 21 else 6  # per group before opset 21, per channel from 21
    compare("GroupNormalization", [("x", x), ("s", rand(n, seed=1)), ("b", rand(n, seed=2))],
            {"num_groups": 2, "epsilon": 1e-3}, opset=opset)


def test_mvn() -> None:
    x = rand(2, 3, 4, 5)
    compare("MeanVarianceNormalization", [("x", x)])
    compare("MeanVarianceNormalization", [("x", x)], {"axes": [1, -1]})


@pytest.mark.parametrize("across", [0, 1])
@pytest.mark.parametrize("norm_var", [0, 1])
def test_mvn_opset1(across: int, norm_var: int) -> None:
    compare("MeanVarianceNormalization", [("x", rand(2, 3, 4, 5))],
            {"across_channels": across, "normalize_variance": norm_var}, opset=8)


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_lpnorm(p: int, axis: int) -> None:
    compare("LpNormalization", [("x", rand(3, 4, 5))], {"p": p, "axis": axis})


def test_lpnorm_zero_norm_is_zero() -> None:
    x = np.zeros((2, 3), np.float32)
    x[1] = [3.0, 4.0, 0.0]
    y = tensorkiln.build(single_node("LpNormalization", [("x", x)], {"p": 2, "axis": 1}, opset=22),
                         optimize=False).run({"x": x})["y0"]
    np.testing.assert_allclose(y, [[0, 0, 0], [0.6, 0.8, 0]], rtol=1e-6)


@pytest.mark.parametrize("axis", [-1, 1])
def test_rmsnorm(axis: int) -> None:
    x = rand(2, 3, 4)
    compare("RMSNormalization", [("x", x), ("s", rand(*x.shape[axis:], seed=1))],
            {"axis": axis, "epsilon": 1e-3}, opset=23)


def test_layernorm_float16() -> None:
    x, s, b = rand(2, 8), rand(8, seed=1), rand(8, seed=2)
    model = single_node("LayerNormalization", [("x", x.astype(np.float16)), ("s", s.astype(np.float16)),
                                               ("b", b.astype(np.float16))], n_out=3)
    y, mean, inv = tensorkiln.build(model, optimize=False).run(
        {"x": x.astype(np.float16), "s": s.astype(np.float16), "b": b.astype(np.float16)}).values()
    assert y.dtype == np.float16 and mean.dtype == np.float32 and inv.dtype == np.float32
    want = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * s + b
    np.testing.assert_allclose(y.astype(np.float32), want, rtol=1e-2, atol=1e-2)
