"""Elementwise CPU kernels (ops_elementwise, ops_cast, ops_linalg): tricky ONNX semantics.

numpy is the reference. Each test builds a one-node model at a chosen opset.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest

import tensorkiln
from tests.backends.cpu.util import Const, run_node


def check(got: np.ndarray, want: Any, dtype: Any = None) -> None:
    want = np.asarray(want, dtype=dtype)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------ arithmetic

@pytest.mark.parametrize("dt", [np.int8, np.int32, np.int64, np.uint8])
def test_integer_div_truncates_toward_zero(dt: Any) -> None:
    a = np.array([7, -7, 7, -7, 0, 9], dtype=dt) if dt != np.uint8 else np.array([7, 9, 250, 0], dt)
    b = np.array([2, 2, -2, -2, 3, 4], dtype=dt) if dt != np.uint8 else np.array([2, 4, 7, 3], dt)
    want = np.trunc(a.astype(np.float64) / b).astype(dt)
    check(run_node("Div", [a, b]), want)


def test_float_div_and_broadcast() -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([1.0, 2.0, 4.0], np.float32)
    check(run_node("Div", [a, b]), a / b)


@pytest.mark.parametrize(("fmod", "ref"), [(0, np.mod), (1, np.fmod)])
def test_mod_sign_rules(fmod: int, ref: Any) -> None:
    a = np.array([5, -5, 5, -5, 7], np.int32)
    b = np.array([3, 3, -3, -3, 7], np.int32)
    check(run_node("Mod", [a, b], fmod=fmod), ref(a, b))


def test_float_fmod() -> None:
    a = np.array([5.5, -5.5, 5.5, -5.5], np.float32)
    b = np.array([2.0, 2.0, -2.0, -2.0], np.float32)
    check(run_node("Mod", [a, b], fmod=1), np.fmod(a, b))


def test_pow_keeps_base_dtype() -> None:
    check(run_node("Pow", [np.array([2, 3], np.int32), np.array([2.0, 0.5], np.float32)]),
          np.array([4, 1], np.int32))
    x = np.array([1.5, 2.0], np.float32)
    check(run_node("Pow", [x, np.array([2, 3], np.int64)]), x ** np.array([2, 3]), np.float32)


def test_variadic_ops_broadcast() -> None:
    a = np.array([[1.0], [5.0]], np.float32)
    b = np.array([2.0, 3.0, 4.0], np.float32)
    c = np.array(3.5, np.float32)
    check(run_node("Max", [a, b, c]), np.maximum(np.maximum(a, b), c))
    check(run_node("Min", [a, b, c]), np.minimum(np.minimum(a, b), c))
    check(run_node("Sum", [a, b, c]), a + b + c)
    check(run_node("Mean", [a, b, c]), (a + b + c) / 3)
    check(run_node("Max", [b]), b)


def test_round_half_to_even_and_isinf_flags() -> None:
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 2.4], np.float32)
    check(run_node("Round", [x]), np.round(x))
    y = np.array([np.inf, -np.inf, 1.0, np.nan], np.float32)
    check(run_node("IsInf", [y], detect_negative=0), [True, False, False, False])
    check(run_node("IsInf", [y], detect_positive=0), [False, True, False, False])
    check(run_node("IsNaN", [y]), [False, False, False, True])


# ------------------------------------------------------- unsigned / bitwise

def test_wide_unsigned_ops() -> None:
    a = np.array([4_000_000_000, 7, 1], np.uint32)
    b = np.array([3, 2, 9], np.uint32)
    check(run_node("Add", [a, b]), a + b)
    check(run_node("Max", [a, b]), np.maximum(a, b))
    check(run_node("Div", [a, b]), a // b)
    check(run_node("BitShift", [a, b], direction="RIGHT"), a >> b)
    check(run_node("BitShift", [a, b], direction="LEFT"), a << b)
    check(run_node("BitwiseNot", [a]), ~a)
    check(run_node("Less", [a, b]), a < b)


def test_uint64_right_shift_is_logical() -> None:
    a = np.array([2**64 - 1, 2**63, 12], np.uint64)
    b = np.array([1, 63, 2], np.uint64)
    check(run_node("BitShift", [a, b], direction="RIGHT"), a >> b)


def test_bitwise_and_logic() -> None:
    a = np.array([12, -3], np.int16)
    b = np.array([10, 5], np.int16)
    check(run_node("BitwiseAnd", [a, b]), a & b)
    check(run_node("BitwiseXor", [a, b]), a ^ b)
    p = np.array([True, False, True])
    q = np.array([True, True, False])
    check(run_node("Xor", [p, q]), p ^ q)
    check(run_node("Not", [p]), ~p)


# ------------------------------------------------------------------- Clip

def test_clip_opset6_attributes() -> None:
    x = np.array([-3.0, 0.5, 3.0], np.float32)
    check(run_node("Clip", [x], opset=6, min=-1.0, max=1.0), np.clip(x, -1, 1))
    check(run_node("Clip", [x], opset=6, max=0.0), np.minimum(x, 0))
    check(run_node("Clip", [x], opset=6), x)


def test_clip_opset11_inputs_const_and_dynamic() -> None:
    x = np.array([-3.0, 0.5, 3.0], np.float32)
    lo, hi = np.array(-1.0, np.float32), np.array(1.0, np.float32)
    check(run_node("Clip", [x, Const(lo), Const(hi)], opset=11), np.clip(x, -1, 1))
    check(run_node("Clip", [x, lo, hi], opset=11), np.clip(x, -1, 1))
    check(run_node("Clip", [x, None, hi], opset=11), np.minimum(x, 1))
    check(run_node("Clip", [x], opset=11), x)


def test_clip_int_and_min_above_max() -> None:
    x = np.array([-5, 0, 5], np.int32)
    check(run_node("Clip", [x, Const(np.int32(-2)), Const(np.int32(2))], opset=13), [-2, 0, 2], np.int32)
    y = np.array([-3.0, 0.5, 3.0], np.float32)
    # min > max: every element becomes max
    check(run_node("Clip", [y, Const(np.float32(2)), Const(np.float32(1))], opset=13), [1, 1, 1], np.float32)


# ------------------------------------------------------------- Cast

def test_cast_float_to_int_truncates_and_to_bool() -> None:
    x = np.array([1.9, -1.9, 0.0, -0.0, 2.5], np.float32)
    check(run_node("Cast", [x], to=onnx.TensorProto.INT32), [1, -1, 0, 0, 2], np.int32)
    check(run_node("Cast", [x], to=onnx.TensorProto.BOOL), [True, True, False, False, True])
    check(run_node("Cast", [x], to=onnx.TensorProto.FLOAT16), x.astype(np.float16))


def test_cast_int_widths_and_castlike() -> None:
    x = np.array([300, -1, 7], np.int64)
    check(run_node("Cast", [x], to=onnx.TensorProto.UINT8), x.astype(np.uint8))
    check(run_node("Cast", [x], to=onnx.TensorProto.UINT32), x.astype(np.uint32))
    check(run_node("CastLike", [x, np.zeros(1, np.float16)]), x.astype(np.float16))


def test_cast_to_float8_is_unsupported() -> None:
    with pytest.raises(tensorkiln.UnsupportedOpError, match="float8"):
        run_node("Cast", [np.zeros(2, np.float32)], opset=19, to=onnx.TensorProto.FLOAT8E4M3FN)


# ----------------------------------------------------------- linear algebra

@pytest.mark.parametrize(("ta", "tb"), [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_gemm_transposes_alpha_beta(ta: int, tb: int) -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 4) if not ta else (4, 3)).astype(np.float32)
    b = rng.standard_normal((4, 5) if not tb else (5, 4)).astype(np.float32)
    c = rng.standard_normal((5,)).astype(np.float32)
    want = 0.5 * ((a.T if ta else a) @ (b.T if tb else b)) + 2.0 * c
    got = run_node("Gemm", [a, b, c], opset=13, alpha=0.5, beta=2.0, transA=ta, transB=tb)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_gemm_without_c_and_int() -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.ones((3, 2), np.float32)
    check(run_node("Gemm", [a, b], opset=13), a @ b)
    ai = np.arange(6, dtype=np.int32).reshape(2, 3)
    bi = np.ones((3, 2), np.int32)
    check(run_node("Gemm", [ai, bi, np.array([1, 2], np.int32)], opset=13), ai @ bi + [1, 2], np.int32)


def test_matmul_einsum_det() -> None:
    rng = np.random.default_rng(1)
    a = rng.standard_normal((2, 3, 4)).astype(np.float32)
    b = rng.standard_normal((4,)).astype(np.float32)
    np.testing.assert_allclose(run_node("MatMul", [a, b]), a @ b, rtol=1e-5)
    np.testing.assert_allclose(run_node("Einsum", [a, a], equation="bij, bkj -> bik"),
                               np.einsum("bij,bkj->bik", a, a), rtol=1e-5, atol=1e-6)
    m = rng.standard_normal((2, 3, 3)).astype(np.float32)
    np.testing.assert_allclose(run_node("Det", [m]), np.linalg.det(m), rtol=1e-4)


# ----------------------------------------------------------- Where, Dropout

def test_where_broadcast() -> None:
    c = np.array([[True], [False]])
    x = np.array([1, 2, 3], np.int64)
    check(run_node("Where", [c, x, np.array(0, np.int64)]), np.where(c, x, 0))


def test_dropout_inference_and_mask() -> None:
    x = np.arange(4, dtype=np.float32)
    y, mask = run_node("Dropout", [x, Const(np.float32(0.3))], opset=13, n_out=2)
    check(y, x)
    check(mask, np.ones(4, bool))
    check(run_node("Dropout", [x], opset=7, ratio=0.5), x)


def test_dropout_training_is_unsupported() -> None:
    x = np.arange(4, dtype=np.float32)
    with pytest.raises(tensorkiln.UnsupportedOpError, match="training_mode"):
        run_node("Dropout", [x, Const(np.float32(0.3)), Const(np.array(True))], opset=13)
