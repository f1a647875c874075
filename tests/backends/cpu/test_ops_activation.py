"""Activation CPU kernels, and Softmax/LogSoftmax/Hardmax before and after opset 13."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from tests.backends.cpu.util import run_node

X = np.array([-3.0, -1.0, -0.25, 0.0, 0.5, 1.0, 2.5, 30.0], np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf)(x)


CASES: list[tuple[str, dict[str, Any], Any]] = [
    ("Relu", {}, lambda x: np.maximum(x, 0)),
    ("LeakyRelu", {"alpha": 0.1}, lambda x: np.where(x < 0, 0.1 * x, x)),
    ("Elu", {"alpha": 0.5}, lambda x: np.where(x < 0, 0.5 * (np.exp(x) - 1), x)),
    ("Selu", {"alpha": 2.0, "gamma": 3.0}, lambda x: 3.0 * np.where(x <= 0, 2.0 * (np.exp(x) - 1), x)),
    ("Celu", {"alpha": 2.0}, lambda x: np.maximum(0, x) + np.minimum(0, 2.0 * (np.exp(x / 2.0) - 1))),
    ("Sigmoid", {}, _sigmoid),
    ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, lambda x: np.clip(0.3 * x + 0.4, 0, 1)),
    ("HardSwish", {}, lambda x: x * np.clip(x / 6 + 0.5, 0, 1)),
    ("Softplus", {}, lambda x: np.log1p(np.exp(x))),
    ("Softsign", {}, lambda x: x / (1 + np.abs(x))),
    ("Mish", {}, lambda x: x * np.tanh(np.log1p(np.exp(x)))),
    ("ThresholdedRelu", {"alpha": 0.5}, lambda x: np.where(x > 0.5, x, 0)),
    ("Shrink", {"bias": 0.5, "lambd": 1.0},
     lambda x: np.where(x < -1.0, x + 0.5, np.where(x > 1.0, x - 0.5, 0))),
]


@pytest.mark.parametrize(("op", "attrs", "ref"), CASES, ids=[c[0] for c in CASES])
def test_activation_matches_formula(op: str, attrs: dict[str, Any], ref: Any) -> None:
    y = run_node(op, [X], **attrs)
    assert y.dtype == np.float32 and y.shape == X.shape
    np.testing.assert_allclose(y, ref(X.astype(np.float64)), rtol=1e-5, atol=1e-6)


def test_gelu_exact_and_tanh() -> None:
    x = X.astype(np.float64)
    exact = 0.5 * x * (1 + _erf(x / np.sqrt(2)))
    tanh = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    np.testing.assert_allclose(run_node("Gelu", [X], opset=20), exact, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(run_node("Gelu", [X], opset=20, approximate="tanh"), tanh, rtol=1e-5, atol=1e-6)


def test_prelu_broadcasts_slope() -> None:
    x = np.array([[[-1.0, 2.0], [-3.0, 4.0]]], np.float32)  # 1x2x2
    slope = np.array([0.1, 0.5], np.float32)  # broadcasts on the last axis, not channels
    np.testing.assert_allclose(run_node("PRelu", [x, slope]), np.where(x < 0, x * slope, x))


def test_relu_and_shrink_int() -> None:
    x = np.array([-5, -1, 0, 3], np.int32)
    y = run_node("Relu", [x], opset=14)
    assert y.dtype == np.int32
    np.testing.assert_array_equal(y, [0, 0, 0, 3])
    s = run_node("Shrink", [x.astype(np.int8)], bias=1.0, lambd=1.5)
    assert s.dtype == np.int8
    np.testing.assert_array_equal(s, [-4, 0, 0, 2])


# ------------------------------------------------------------ Softmax family

def _softmax_2d(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


RNG = np.random.default_rng(0)
T = RNG.standard_normal((2, 3, 4)).astype(np.float32)


def test_softmax_before_13_flattens_at_axis() -> None:
    # opset 11, axis=1: normalize over the 3*4 trailing elements together
    want = _softmax_2d(T.reshape(2, 12)).reshape(T.shape)
    np.testing.assert_allclose(run_node("Softmax", [T], opset=11), want, rtol=1e-5)
    np.testing.assert_allclose(run_node("Softmax", [T], opset=11, axis=1), want, rtol=1e-5)
    want0 = _softmax_2d(T.reshape(1, 24)).reshape(T.shape)
    np.testing.assert_allclose(run_node("Softmax", [T], opset=11, axis=0), want0, rtol=1e-5)
    wantm1 = _softmax_2d(T.reshape(6, 4)).reshape(T.shape)
    np.testing.assert_allclose(run_node("Softmax", [T], opset=11, axis=-1), wantm1, rtol=1e-5)


def test_softmax_13_along_axis() -> None:
    e = np.exp(T - T.max(axis=1, keepdims=True))
    want = e / e.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(run_node("Softmax", [T], opset=13, axis=1), want, rtol=1e-5)
    wantd = _softmax_2d(T.reshape(6, 4)).reshape(T.shape)  # default axis -1
    np.testing.assert_allclose(run_node("Softmax", [T], opset=13), wantd, rtol=1e-5)


def test_logsoftmax_old_and_new() -> None:
    old = np.log(_softmax_2d(T.reshape(2, 12))).reshape(T.shape)
    np.testing.assert_allclose(run_node("LogSoftmax", [T], opset=11), old, rtol=1e-5, atol=1e-6)
    e = np.exp(T - T.max(axis=1, keepdims=True))
    new = np.log(e / e.sum(axis=1, keepdims=True))
    np.testing.assert_allclose(run_node("LogSoftmax", [T], opset=13, axis=1), new, rtol=1e-5, atol=1e-6)


def test_softmax_float16() -> None:
    x = T.astype(np.float16)
    y = run_node("Softmax", [x], opset=13)
    assert y.dtype == np.float16
    np.testing.assert_allclose(y, _softmax_2d(T.reshape(6, 4)).reshape(T.shape), rtol=2e-3, atol=1e-3)


def test_hardmax_old_new_and_ties() -> None:
    x = np.array([[[1.0, 3.0], [3.0, 0.0]], [[2.0, 2.0], [0.0, 1.0]]], np.float32)
    # opset 11, axis=1: one 1 per batch row over the flattened 2x2 block (first max wins)
    old = run_node("Hardmax", [x], opset=11)
    np.testing.assert_array_equal(old, [[[0, 1], [0, 0]], [[1, 0], [0, 0]]])
    # opset 13, axis=1: along axis 1 only
    new = run_node("Hardmax", [x], opset=13, axis=1)
    np.testing.assert_array_equal(new, [[[0, 1], [1, 0]], [[1, 1], [0, 0]]])
    assert new.dtype == np.float32
