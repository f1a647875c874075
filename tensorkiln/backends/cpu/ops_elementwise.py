"""CPU kernels: elementwise operators (math, arithmetic, comparison, logic, bitwise).

Shared helpers for the other elementwise-like families (``ops_cast``, ``ops_linalg``,
``ops_activation``, ``ops_reduce``) live here too: ``in_dtype`` and ``widen``.

ATen has almost no kernels for uint16/uint32/uint64, so ``widen`` runs those through
int64 and converts back (conversions wrap modulo 2**bits, so add/sub/mul/bitwise are
exact; for uint64 values >= 2**63 order-dependent ops like Max or Div are not).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from tensorkiln.backends.cpu.base import (
    BuildContext,
    Factory,
    Kernel,
    attr,
    const_input,
    has_input,
    unsupported,
)
from tensorkiln.errors import UnsupportedOpError
from tensorkiln.ir import Node

Tensor = torch.Tensor
UWIDE = frozenset({torch.uint16, torch.uint32, torch.uint64})
_FLOATS = frozenset({torch.float16, torch.float32, torch.float64, torch.bfloat16})


def in_dtype(node: Node, i: int = 0) -> torch.dtype | None:
    """The torch dtype of input ``i`` when the graph knows it, else None."""
    v = node.inputs[i] if i < len(node.inputs) else None
    if v is None or v.dtype is None:
        return None
    try:
        return v.dtype.to_torch()
    except UnsupportedOpError:
        raise unsupported(node, f"input {i} has element type {v.dtype.short}") from None


def out_dtype(node: Node, i: int = 0) -> torch.dtype | None:
    v = node.outputs[i] if i < len(node.outputs) else None
    if v is None or v.dtype is None:
        return None
    try:
        return v.dtype.to_torch()
    except UnsupportedOpError:
        raise unsupported(node, f"output {i} has element type {v.dtype.short}") from None


def widen(node: Node, fn: Callable[..., Tensor]) -> Kernel:
    """``fn`` as is when no input can be uint16/32/64; else a kernel that runs those in int64."""
    known = [in_dtype(node, i) for i in range(len(node.inputs)) if node.inputs[i] is not None]
    if known and all(d is not None and d not in UWIDE for d in known):
        return fn

    def k(*xs: Tensor | None) -> Tensor:
        wide = next((x.dtype for x in xs if x is not None and x.dtype in UWIDE), None)
        if wide is None:
            return fn(*xs)
        r = fn(*(x.to(torch.int64) if x is not None and x.dtype in UWIDE else x for x in xs))
        return r.to(wide) if r.dtype == torch.int64 else r

    return k


def _simple(fn: Callable[..., Tensor]) -> Factory:
    """A factory for an op that is one ATen call on its inputs."""

    def factory(node: Node, ctx: BuildContext) -> Kernel:
        return widen(node, fn)

    return factory


# ---------------------------------------------------------------- unary math

def _float_only(fn: Callable[[Tensor], Tensor]) -> Factory:
    """Unary float ops (ONNX types: float16/32/64, bfloat16)."""

    def factory(node: Node, ctx: BuildContext) -> Kernel:
        dt = in_dtype(node)
        if dt is not None and dt not in _FLOATS:
            raise unsupported(node, f"input type {dt} (ONNX allows float types only)")
        return fn

    return factory


_UNARY_FLOAT: dict[str, Callable[[Tensor], Tensor]] = {
    "Acos": torch.acos, "Acosh": torch.acosh, "Asin": torch.asin, "Asinh": torch.asinh,
    "Atan": torch.atan, "Atanh": torch.atanh, "Cos": torch.cos, "Cosh": torch.cosh,
    "Sin": torch.sin, "Sinh": torch.sinh, "Tan": torch.tan, "Tanh": torch.tanh,
    "Ceil": torch.ceil, "Floor": torch.floor, "Round": torch.round, "Erf": torch.erf,
    "Exp": torch.exp, "Log": torch.log, "Sqrt": torch.sqrt, "Reciprocal": torch.reciprocal,
    "IsNaN": torch.isnan,
}


def _is_inf(node: Node, ctx: BuildContext) -> Kernel:
    pos = attr(node, "detect_positive", 1) != 0
    neg = attr(node, "detect_negative", 1) != 0
    if pos and neg:
        return torch.isinf
    if pos:
        return torch.isposinf
    if neg:
        return torch.isneginf
    return lambda x: torch.zeros(x.shape, dtype=torch.bool)


# ------------------------------------------------------------ binary arithmetic

def _div(node: Node, ctx: BuildContext) -> Kernel:
    def int_div(a: Tensor, b: Tensor) -> Tensor:
        return torch.div(a, b, rounding_mode="trunc")  # C semantics: toward zero

    dt = in_dtype(node)
    if dt is None:
        return widen(node, lambda a, b: torch.div(a, b) if a.is_floating_point() else int_div(a, b))
    return torch.div if dt in _FLOATS else widen(node, int_div)


def _mod(node: Node, ctx: BuildContext) -> Kernel:
    fmod = attr(node, "fmod", 0)
    # fmod=1: sign of the dividend (C fmod); fmod=0: sign of the divisor (Python %)
    return widen(node, torch.fmod if fmod else torch.remainder)


def _pow(node: Node, ctx: BuildContext) -> Kernel:
    def k(a: Tensor, b: Tensor) -> Tensor:
        if not a.is_floating_point() and b.is_floating_point():
            return torch.pow(a.double(), b.double()).to(a.dtype)
        r = torch.pow(a, b)
        return r if r.dtype == a.dtype else r.to(a.dtype)

    return widen(node, k)


def _bitshift(node: Node, ctx: BuildContext) -> Kernel:
    direction = attr(node, "direction", "")
    if direction == "LEFT":
        return widen(node, torch.bitwise_left_shift)
    if direction != "RIGHT":
        raise unsupported(node, f"direction must be LEFT or RIGHT, got {direction!r}")

    def right(a: Tensor, b: Tensor) -> Tensor:
        if a.dtype not in UWIDE:
            return torch.bitwise_right_shift(a, b)
        wide = a.dtype
        a64, b64 = a.to(torch.int64), b.to(torch.int64)
        r = torch.bitwise_right_shift(a64, b64)
        if wide == torch.uint64:  # values >= 2**63 are negative in int64: shift logically
            logical = torch.bitwise_right_shift(
                torch.bitwise_right_shift(a64, 1) & 0x7FFF_FFFF_FFFF_FFFF, (b64 - 1).clamp(min=0)
            )
            r = torch.where((a64 < 0) & (b64 > 0), logical, r)
        return r.to(wide)

    return right


# ----------------------------------------------------------------- variadic

def _variadic(pair: Callable[[Tensor, Tensor], Tensor]) -> Factory:
    def factory(node: Node, ctx: BuildContext) -> Kernel:
        n = len(node.inputs)
        if n == 0:
            raise unsupported(node, "needs at least one input")
        if n == 1:
            return lambda x: x
        if n == 2:
            return widen(node, pair)
        return widen(node, lambda *xs: functools.reduce(pair, xs))

    return factory


def _mean(node: Node, ctx: BuildContext) -> Kernel:
    n = len(node.inputs)
    if n == 1:
        return lambda x: x
    return lambda *xs: functools.reduce(torch.add, xs) / n


# ------------------------------------------------------------------- Clip

def _scalar(node: Node, i: int) -> Any:
    arr = const_input(node, i)
    if arr is None:
        return None
    if arr.size != 1:
        raise unsupported(node, f"input {i} must be a scalar, got shape {arr.shape}")
    return arr.reshape(()).item()


def _clip(node: Node, ctx: BuildContext) -> Kernel:
    if node.opset < 11:
        lo: Any = attr(node, "min", None)
        hi: Any = attr(node, "max", None)
        if lo is None and hi is None:
            return lambda x: x
        return lambda x: torch.clamp(x, lo, hi)

    lo_dyn = has_input(node, 1) and const_input(node, 1) is None
    hi_dyn = has_input(node, 2) and const_input(node, 2) is None
    if lo_dyn or hi_dyn:
        def dyn(x: Tensor, lo_t: Tensor | None = None, hi_t: Tensor | None = None) -> Tensor:
            if lo_t is None and hi_t is None:
                return x
            return torch.clamp(x, lo_t, hi_t)

        return widen(node, dyn)

    lo = _scalar(node, 1) if has_input(node, 1) else None
    hi = _scalar(node, 2) if has_input(node, 2) else None
    if lo is None and hi is None:
        return lambda x, *_: x

    def k(x: Tensor, *_: Any) -> Tensor:
        return torch.clamp(x, lo, hi)

    return widen(node, k)


# --------------------------------------------------------- Identity, Dropout

def _identity(node: Node, ctx: BuildContext) -> Kernel:
    return lambda x: x


def _dropout(node: Node, ctx: BuildContext) -> Kernel:
    n_out = len(node.outputs)
    ratio = attr(node, "ratio", 0.5)
    train: bool | None = False
    if node.opset >= 12:
        r = const_input(node, 1) if has_input(node, 1) else None
        ratio = float(r.reshape(())) if r is not None else (0.5 if not has_input(node, 1) else None)
        if has_input(node, 2):
            t = const_input(node, 2)
            train = bool(t.reshape(())) if t is not None else None
        if train and ratio is not None and ratio > 0:
            raise unsupported(node, "training_mode=True with ratio > 0 (inference only)")
    mask_dt = (out_dtype(node, 1) or torch.bool) if n_out > 1 else torch.bool

    def k(x: Tensor, ratio_t: Tensor | None = None, train_t: Tensor | None = None) -> Any:
        if train is None and train_t is not None and bool(train_t):
            r = float(ratio_t) if ratio_t is not None else 0.5
            if r > 0:
                raise unsupported(node, "training_mode=True with ratio > 0 (inference only)")
        if n_out == 1:
            return x
        return x, torch.ones(x.shape, dtype=mask_dt)

    return k


KERNELS: dict[str, Factory] = {
    **{op: _float_only(fn) for op, fn in _UNARY_FLOAT.items()},
    "Abs": _simple(torch.abs),
    "Neg": _simple(torch.neg),
    "Sign": _simple(torch.sign),
    "IsInf": _is_inf,
    "Add": _simple(torch.add),
    "Sub": _simple(torch.sub),
    "Mul": _simple(torch.mul),
    "Div": _div,
    "Mod": _mod,
    "Pow": _pow,
    "Equal": _simple(torch.eq),
    "Greater": _simple(torch.gt),
    "GreaterOrEqual": _simple(torch.ge),
    "Less": _simple(torch.lt),
    "LessOrEqual": _simple(torch.le),
    "And": _simple(torch.logical_and),
    "Or": _simple(torch.logical_or),
    "Xor": _simple(torch.logical_xor),
    "Not": _simple(torch.logical_not),
    "BitwiseAnd": _simple(torch.bitwise_and),
    "BitwiseOr": _simple(torch.bitwise_or),
    "BitwiseXor": _simple(torch.bitwise_xor),
    "BitwiseNot": _simple(torch.bitwise_not),
    "BitShift": _bitshift,
    "Where": _simple(torch.where),
    "Max": _variadic(torch.maximum),
    "Min": _variadic(torch.minimum),
    "Sum": _variadic(torch.add),
    "Mean": _mean,
    "Clip": _clip,
    "Identity": _identity,
    "Dropout": _dropout,
}
