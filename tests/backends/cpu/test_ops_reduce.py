"""Reduce*, ArgMax/ArgMin and CumSum CPU kernels: axes as attribute vs input, edge cases."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from onnx import helper, numpy_helper

import tensorkiln
from tests.backends.cpu import util
from tests.backends.cpu.util import Const


def run_node(op: str, x: np.ndarray, axes_in: Any = None, *, opset: int = 18,
             axes_const: bool = True, **attrs: Any) -> np.ndarray:
    """One-node model; ``axes_in`` (when not None) is the second input, constant or fed."""
    args: list[Any] = [x]
    if axes_in is not None:
        axes = np.asarray(axes_in, dtype=np.int64)
        args.append(Const(axes) if axes_const else axes)
    return util.run_node(op, args, opset, **attrs)


X = np.random.default_rng(0).uniform(0.5, 2.0, (2, 3, 4)).astype(np.float32)


def check(got: np.ndarray, want: Any, rtol: float = 1e-5) -> None:
    want = np.asarray(want)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-6)


def test_reduce_sum_axes_attribute_before_13() -> None:
    check(run_node("ReduceSum", X, opset=11, axes=[0, 2]), X.sum(axis=(0, 2), keepdims=True))
    check(run_node("ReduceSum", X, opset=11, axes=[-1], keepdims=0), X.sum(axis=-1))
    check(run_node("ReduceSum", X, opset=11, keepdims=0), X.sum(dtype=np.float32))


@pytest.mark.parametrize("const", [True, False])
def test_reduce_sum_axes_input_from_13(const: bool) -> None:
    check(run_node("ReduceSum", X, [1], opset=13, axes_const=const), X.sum(axis=1, keepdims=True))
    check(run_node("ReduceSum", X, [0, -1], opset=13, axes_const=const, keepdims=0), X.sum(axis=(0, 2)))
    # empty axes: reduce everything, or nothing with noop_with_empty_axes
    empty = np.zeros(0, np.int64)
    check(run_node("ReduceSum", X, empty, opset=13, axes_const=const), X.sum(keepdims=True))
    check(run_node("ReduceSum", X, empty, opset=13, axes_const=const, noop_with_empty_axes=1), X)


def test_reduce_without_axes_input_and_noop() -> None:
    check(run_node("ReduceMean", X, opset=18), X.mean(keepdims=True))
    check(run_node("ReduceMean", X, opset=18, noop_with_empty_axes=1), X)


def test_reduce_mean_attribute_vs_input() -> None:
    want = X.mean(axis=(1,), keepdims=False)
    check(run_node("ReduceMean", X, opset=17, axes=[1], keepdims=0), want)
    check(run_node("ReduceMean", X, [1], opset=18, keepdims=0), want)


@pytest.mark.parametrize(
    ("op", "ref"),
    [
        ("ReduceMax", lambda x, a: x.max(axis=a, keepdims=True)),
        ("ReduceMin", lambda x, a: x.min(axis=a, keepdims=True)),
        ("ReduceProd", lambda x, a: x.prod(axis=a, keepdims=True)),
        ("ReduceL1", lambda x, a: np.abs(x).sum(axis=a, keepdims=True)),
        ("ReduceL2", lambda x, a: np.sqrt((x * x).sum(axis=a, keepdims=True))),
        ("ReduceLogSum", lambda x, a: np.log(x.sum(axis=a, keepdims=True))),
        ("ReduceLogSumExp", lambda x, a: np.log(np.exp(x).sum(axis=a, keepdims=True))),
        ("ReduceSumSquare", lambda x, a: (x * x).sum(axis=a, keepdims=True)),
    ],
)
def test_reductions_over_two_axes(op: str, ref: Any) -> None:
    check(run_node(op, X, [0, 2]), ref(X, (0, 2)).astype(np.float32))
    check(run_node(op, X, opset=13, axes=[0, 2]), ref(X, (0, 2)).astype(np.float32))


def test_empty_set_gives_identity() -> None:
    e = np.zeros((2, 0, 3), np.float32)
    check(run_node("ReduceMax", e, [1]), np.full((2, 1, 3), -np.inf, np.float32))
    check(run_node("ReduceMin", e, [1]), np.full((2, 1, 3), np.inf, np.float32))
    check(run_node("ReduceProd", e, [1]), np.ones((2, 1, 3), np.float32))
    check(run_node("ReduceSum", e, [1]), np.zeros((2, 1, 3), np.float32))
    check(run_node("ReduceLogSumExp", e, [1]), np.full((2, 1, 3), -np.inf, np.float32))
    ei = np.zeros((2, 0), np.int32)
    check(run_node("ReduceMax", ei, [1], keepdims=0), np.full(2, np.iinfo(np.int32).min, np.int32))
    check(run_node("ReduceMax", np.zeros((0, 2), bool), [0], keepdims=0), np.zeros(2, bool))


def test_integer_reductions_keep_dtype() -> None:
    xi = np.array([[1, -7, 3], [4, 5, 6]], np.int32)
    check(run_node("ReduceSum", xi, [1]), xi.sum(axis=1, keepdims=True).astype(np.int32))
    check(run_node("ReduceProd", xi, [0, 1], keepdims=0), np.array(xi.prod(), np.int32))
    check(run_node("ReduceMean", xi, [1], keepdims=0), np.array([-1, 5], np.int32))
    check(run_node("ReduceL2", xi, [1], keepdims=0), np.sqrt((xi * xi).sum(axis=1)).astype(np.int32))
    check(run_node("ReduceMax", xi.astype(np.uint8), [1], keepdims=0), xi.astype(np.uint8).max(axis=1))


# ------------------------------------------------------------------ ArgMax/Min

def test_argmax_argmin_select_last_index() -> None:
    x = np.array([[1, 3, 3, 0], [2, 2, 1, 1]], np.float32)
    check(run_node("ArgMax", x, axis=1, opset=13), np.array([[1], [0]], np.int64))
    check(run_node("ArgMax", x, axis=1, select_last_index=1, keepdims=0, opset=13), np.array([2, 1], np.int64))
    check(run_node("ArgMin", x, axis=-1, select_last_index=1, keepdims=0, opset=13), np.array([3, 3], np.int64))
    check(run_node("ArgMin", x, opset=11), np.array([[0, 1, 1, 0]], np.int64))


def test_argmax_bool_and_int() -> None:
    check(run_node("ArgMax", np.array([[False, True, True]]), axis=1, keepdims=0), np.array([1], np.int64))
    check(run_node("ArgMin", np.array([5, -2, 7], np.int8), keepdims=0), np.array(1, np.int64))


# ---------------------------------------------------------------------- CumSum

def _cumsum_model(x: np.ndarray, axis: int, **attrs: Any) -> np.ndarray:
    vis = [helper.make_tensor_value_info("x", helper.np_dtype_to_tensor_dtype(x.dtype), x.shape)]
    node = helper.make_node("CumSum", ["x", "axis"], ["y"], **attrs)
    init = numpy_helper.from_array(np.array(axis, np.int32), "axis")
    g = helper.make_graph([node], "g", vis, [helper.make_empty_tensor_value_info("y")], initializer=[init])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
    return tensorkiln.build(m).run({"x": x})["y"]


@pytest.mark.parametrize(("exclusive", "reverse"), [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_cumsum_exclusive_reverse(exclusive: int, reverse: int) -> None:
    x = np.array([[1, 2, 3], [4, 5, 6]], np.int32)
    v = x[:, ::-1] if reverse else x
    c = np.cumsum(v, axis=1)
    if exclusive:
        c = np.concatenate([np.zeros((2, 1), c.dtype), c[:, :-1]], axis=1)
    want = (c[:, ::-1] if reverse else c).astype(np.int32)
    check(_cumsum_model(x, -1, exclusive=exclusive, reverse=reverse), want)
