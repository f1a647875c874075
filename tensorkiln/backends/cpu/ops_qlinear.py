"""CPU kernels: integer convolution / matmul (ConvInteger, MatMulInteger, QLinearConv,
QLinearMatMul).

These emulate the integer semantics exactly: operands minus zero points are exact in
float64 and so is every accumulated sum below 2**53, so a float64 convolution or matmul
rounded back gives the int32 accumulator bit for bit. The requantization of the QLinear
ops follows the ONNX reference: ``acc * (scale_a * scale_b / scale_y)`` with the multiplier
in the scales' type and the product in float64, then ``+ zero_point``, saturation and
rounding half to even. Correct first; the fast int8 tactics come later.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from tensorkiln.backends.cpu.base import Factory, Kernel, const_input, torch_const, unsupported
from tensorkiln.backends.cpu.ops_nn import conv_call
from tensorkiln.backends.cpu.ops_quant import RANGES
from tensorkiln.ir import DType, Node

F64 = torch.float64


def _sub(t: torch.Tensor, z: torch.Tensor | None, per_dim0: bool = False) -> torch.Tensor:
    """``t - z`` in float64; a 1-D ``z`` of several values is per dim 0 if asked."""
    t = t.to(F64)
    if z is None:
        return t
    z = z.to(F64)
    if z.numel() == 1:
        return t - z.reshape(())
    if per_dim0 and z.dim() == 1:
        z = z.reshape(-1, *([1] * (t.dim() - 1)))
    return t - z


def _prepared_weight(node: Node, wi: int, zi: int) -> Callable[[torch.Tensor, Any], torch.Tensor]:
    """``w - w_zero_point`` (float64), computed once when both are constants."""
    w, z = const_input(node, wi), const_input(node, zi)
    has_z = zi < len(node.inputs) and node.inputs[zi] is not None
    if w is not None and (z is not None or not has_z):
        fixed = _sub(torch_const(w), None if z is None else torch_const(z), per_dim0=True)
        return lambda wt, zt: fixed
    return lambda wt, zt: _sub(wt, zt, per_dim0=True)


def _to_int32(acc: torch.Tensor) -> torch.Tensor:
    return torch.round(acc).to(torch.int32)


def _requant_range(node: Node, zp_index: int, x_index: int) -> tuple[int, int, torch.dtype]:
    v = node.inputs[zp_index] if zp_index < len(node.inputs) else None
    if v is None:
        v = node.inputs[x_index]
    dt = v.dtype if v is not None and v.dtype is not None else DType.UINT8
    if dt not in RANGES:
        raise unsupported(node, f"quantized type {dt.name}")
    lo, hi = RANGES[dt]
    return lo, hi, dt.to_torch()


# ---------------------------------------------------------------------------------------
# ConvInteger, QLinearConv


def _conv_integer(node: Node, ctx: object) -> Kernel:
    conv = conv_call(node, 1)
    weight = _prepared_weight(node, 1, 3)

    def conv_int(x: torch.Tensor, w: torch.Tensor, xz: torch.Tensor | None = None,
                 wz: torch.Tensor | None = None) -> torch.Tensor:
        return _to_int32(conv(_sub(x, xz), weight(w, wz)))

    return conv_int


def _qlinear_conv(node: Node, ctx: object) -> Kernel:
    conv = conv_call(node, 3)
    weight = _prepared_weight(node, 3, 5)
    lo, hi, out_dt = _requant_range(node, 7, 0)

    def qconv(x: torch.Tensor, xs: torch.Tensor, xz: torch.Tensor, w: torch.Tensor,
              ws: torch.Tensor, wz: torch.Tensor, ys: torch.Tensor, yz: torch.Tensor | None = None,
              b: torch.Tensor | None = None) -> torch.Tensor:
        acc = conv(_sub(x, xz), weight(w, wz), None if b is None else b.to(F64))
        mult = xs * ws / ys  # in the scales' type, like the reference
        if mult.numel() > 1:
            mult = mult.reshape(1, -1, *([1] * (acc.dim() - 2)))
        r = acc * mult.to(F64)
        if yz is not None:
            r = r + yz.to(F64).reshape(())
        return torch.round(r.clamp_(lo, hi)).to(out_dt)

    return qconv


# ---------------------------------------------------------------------------------------
# MatMulInteger, QLinearMatMul


def _a_zero(a: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
    """A minus its zero point: per tensor, or per row (1-D of length M, or [..., M, 1])."""
    if z is not None and z.dim() == 1 and z.numel() > 1 and a.dim() >= 2:
        z = z.reshape(-1, 1)
    return _sub(a, z)


def _matmul_integer(node: Node, ctx: object) -> Kernel:
    b_const, bz_const = const_input(node, 1), const_input(node, 3)
    has_bz = len(node.inputs) > 3 and node.inputs[3] is not None
    fixed_b = None
    if b_const is not None and (bz_const is not None or not has_bz):
        fixed_b = _sub(torch_const(b_const), None if bz_const is None else torch_const(bz_const))

    def mm_int(a: torch.Tensor, b: torch.Tensor, az: torch.Tensor | None = None,
               bz: torch.Tensor | None = None) -> torch.Tensor:
        bb = fixed_b if fixed_b is not None else _sub(b, bz)
        return _to_int32(torch.matmul(_a_zero(a, az), bb))

    return mm_int


def _qlinear_matmul(node: Node, ctx: object) -> Kernel:
    lo, hi, out_dt = _requant_range(node, 7, 0)

    def qmm(a: torch.Tensor, a_s: torch.Tensor, az: torch.Tensor, b: torch.Tensor, b_s: torch.Tensor,
            bz: torch.Tensor, ys: torch.Tensor, yz: torch.Tensor | None = None) -> torch.Tensor:
        acc = torch.matmul(_a_zero(a, az), _sub(b, bz))
        if a_s.dim() == 1 and a_s.numel() > 1:
            a_s = a_s.reshape(-1, 1)
        r = acc * (a_s * b_s / ys).to(F64)
        if yz is not None:
            r = r + yz.to(F64)
        return torch.round(r).clamp_(lo, hi).to(out_dt)

    return qmm


KERNELS: dict[str, Factory] = {
    "ConvInteger": _conv_integer,
    "MatMulInteger": _matmul_integer,
    "QLinearConv": _qlinear_conv,
    "QLinearMatMul": _qlinear_matmul,
}
