"""CPU kernels: com.microsoft quantized ops from onnxruntime's quantization tools.

* weight-only: MatMulNBits (2/4/8-bit blocks; dequantized once in the factory when the
  weights are constants, then a float matmul),
* dynamic: DynamicQuantizeMatMul, MatMulIntegerToFloat,
* QOperator format: QLinearAdd, QLinearMul, QLinearSigmoid, QLinearLeakyRelu,
  QLinearGlobalAveragePool, QLinearConcat, QGemm,
* QuantizeLinear / DequantizeLinear in the com.microsoft domain (the ONNX kernels).

Integer products are exact (float64 operands, sums far below 2**53); requantization is
``round_half_even(value / y_scale) + y_zero_point`` saturated, like onnxruntime.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from tensorkiln.backends.cpu import ops_quant
from tensorkiln.backends.cpu.base import (
    BuildContext,
    Factory,
    Kernel,
    attr,
    bad_model,
    const_input,
    has_input,
    torch_const,
    unsupported,
)
from tensorkiln.ir import Node

MS = "com.microsoft::"
F64 = torch.float64
_RANGE = {torch.uint8: (0, 255), torch.int8: (-128, 127), torch.uint16: (0, 65535),
          torch.int16: (-32768, 32767), torch.int32: (-(2**31), 2**31 - 1)}


def _deq(x: torch.Tensor, s: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
    x = x.to(torch.float32)
    if z is not None:
        x = x - z.to(torch.float32)
    return x * s.to(torch.float32)


def _quant(y: torch.Tensor, s: torch.Tensor, z: torch.Tensor | None, dt: torch.dtype) -> torch.Tensor:
    lo, hi = _RANGE[dt]
    q = torch.round(y.to(torch.float32) / s.to(torch.float32))
    if z is not None:
        q = q + z.to(torch.float32)
    return q.clamp(lo, hi).to(dt)


def _qtype(z: torch.Tensor | None, x: torch.Tensor) -> torch.dtype:
    return z.dtype if z is not None else x.dtype


# ----------------------------------------------------------------------- MatMulNBits


def _unpack(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """uint8 [..., nbytes] holding ``bits``-bit values, lowest bits first -> [..., count]."""
    per = 8 // bits
    p = packed.to(torch.int32)
    parts = [(p >> (bits * i)) & ((1 << bits) - 1) for i in range(per)]
    vals = torch.stack(parts, -1).reshape(*packed.shape[:-1], packed.shape[-1] * per)
    return vals[..., :count]


def _nbits_weight(node: Node, B: torch.Tensor, scales: torch.Tensor, zp: torch.Tensor | None,
                  g_idx: torch.Tensor | None) -> torch.Tensor:
    """The dequantized weight [N, K] (float32)."""
    K, N = int(attr(node, "K")), int(attr(node, "N"))
    bits, bs = int(attr(node, "bits", 4)), int(attr(node, "block_size"))
    if bits not in (2, 4, 8):
        raise unsupported(node, f"bits={bits}")
    nb = (K + bs - 1) // bs
    q = _unpack(B.reshape(N, nb, -1), bits, bs).reshape(N, nb * bs)[:, :K].to(torch.float32)
    sc = scales.reshape(N, nb).to(torch.float32)
    if zp is None:
        z = torch.full((N, nb), float(1 << (bits - 1)))
    elif zp.dtype == torch.uint8 and zp.dtype != scales.dtype:
        z = _unpack(zp.reshape(N, -1), bits, nb).to(torch.float32)
    else:
        z = zp.reshape(N, nb).to(torch.float32)
    blk = g_idx.long() if g_idx is not None else torch.arange(K) // bs
    return (q - z[:, blk]) * sc[:, blk]


def _matmul_nbits(node: Node, ctx: BuildContext) -> Kernel:
    for a in ("K", "N", "block_size"):
        if attr(node, a) is None:
            raise bad_model(node, f"missing attribute {a!r}")
    idx = {"zp": 3, "g": 4, "bias": 5}
    const_ok = all(const_input(node, i) is not None for i in (1, 2)) and all(
        not has_input(node, i) or const_input(node, i) is not None for i in (3, 4))
    fixed = None
    if const_ok:
        opt = {k: (torch_const(const_input(node, i)) if has_input(node, i) else None)  # type: ignore[arg-type]
               for k, i in idx.items() if k != "bias"}
        fixed = _nbits_weight(node, torch_const(const_input(node, 1)), torch_const(const_input(node, 2)),  # type: ignore[arg-type]
                              opt["zp"], opt["g"])

    def kernel(a: torch.Tensor, b: torch.Tensor, scales: torch.Tensor, zp: torch.Tensor | None = None,
               g_idx: torch.Tensor | None = None, bias: torch.Tensor | None = None) -> torch.Tensor:
        w = fixed if fixed is not None else _nbits_weight(node, b, scales, zp, g_idx)
        y = torch.nn.functional.linear(a.to(torch.float32), w,
                                       None if bias is None else bias.to(torch.float32))
        return y.to(a.dtype)

    return kernel


# ----------------------------------------------------------------- dynamic quantization


def _int_matmul(a: torch.Tensor, az: torch.Tensor | None, b: torch.Tensor,
                bz: torch.Tensor | None) -> torch.Tensor:
    """(a - az) @ (b - bz), exact, as float64. ``bz`` may be per column ([N])."""
    a64 = a.to(F64) - (az.to(F64) if az is not None else 0.0)
    b64 = b.to(F64) - (bz.to(F64) if bz is not None else 0.0)
    return torch.matmul(a64, b64)


def _dyn_quant_matmul(node: Node, ctx: BuildContext) -> Kernel:
    def kernel(a: torch.Tensor, b: torch.Tensor, b_scale: torch.Tensor, b_zp: torch.Tensor | None = None,
               bias: torch.Tensor | None = None) -> torch.Tensor:
        af = a.to(torch.float32)
        lo = torch.clamp(af.min(), max=0.0)
        hi = torch.clamp(af.max(), min=0.0)
        scale = (hi - lo) / 255.0
        scale = torch.where(scale == 0, torch.ones_like(scale), scale)
        zp = torch.clamp(torch.round(-lo / scale), 0, 255)
        aq = torch.clamp(torch.round(af / scale) + zp, 0, 255)
        acc = _int_matmul(aq, zp, b, b_zp).to(torch.float32)
        y = acc * (scale * b_scale.to(torch.float32))
        if bias is not None:
            y = y + bias.to(torch.float32)
        return y

    return kernel


def _matmul_int_to_float(node: Node, ctx: BuildContext) -> Kernel:
    def kernel(a: torch.Tensor, b: torch.Tensor, a_scale: torch.Tensor, b_scale: torch.Tensor,
               a_zp: torch.Tensor | None = None, b_zp: torch.Tensor | None = None,
               bias: torch.Tensor | None = None) -> torch.Tensor:
        acc = _int_matmul(a, a_zp, b, b_zp).to(torch.float32)
        y = acc * (a_scale.to(torch.float32) * b_scale.to(torch.float32))
        if bias is not None:
            y = y + bias.to(torch.float32)
        return y.to(a_scale.dtype)

    return kernel


# ---------------------------------------------------------------------- QOperator ops


def _qbinary(fn: Any) -> Factory:
    def factory(node: Node, ctx: BuildContext) -> Kernel:
        def kernel(a: torch.Tensor, a_s: torch.Tensor, a_z: torch.Tensor | None, b: torch.Tensor,
                   b_s: torch.Tensor, b_z: torch.Tensor | None, c_s: torch.Tensor,
                   c_z: torch.Tensor | None = None) -> torch.Tensor:
            y = fn(_deq(a, a_s, a_z), _deq(b, b_s, b_z))
            return _quant(y, c_s, c_z, _qtype(c_z, a))

        return kernel

    return factory


def _qunary(node: Node, fn: Any) -> Kernel:
    def kernel(x: torch.Tensor, x_s: torch.Tensor, x_z: torch.Tensor | None, y_s: torch.Tensor,
               y_z: torch.Tensor | None = None) -> torch.Tensor:
        return _quant(fn(_deq(x, x_s, x_z)), y_s, y_z, _qtype(y_z, x))

    return kernel


def _qsigmoid(node: Node, ctx: BuildContext) -> Kernel:
    return _qunary(node, torch.sigmoid)


def _qleaky(node: Node, ctx: BuildContext) -> Kernel:
    alpha = float(attr(node, "alpha", 0.01))
    return _qunary(node, lambda x: torch.where(x >= 0, x, x * alpha))


def _qgap(node: Node, ctx: BuildContext) -> Kernel:
    last = bool(attr(node, "channels_last", 0))

    def fn(x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(1, x.dim() - 1)) if last else tuple(range(2, x.dim()))
        return x.mean(dims, keepdim=True)

    return _qunary(node, fn)


def _qconcat(node: Node, ctx: BuildContext) -> Kernel:
    axis = int(attr(node, "axis", 0))

    def kernel(y_s: torch.Tensor, y_z: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        if len(rest) % 3:
            raise ValueError("QLinearConcat takes (tensor, scale, zero point) triples")
        xs = [_deq(rest[i], rest[i + 1], rest[i + 2]) for i in range(0, len(rest), 3)]
        return _quant(torch.cat(xs, axis), y_s, y_z, y_z.dtype)

    return kernel


def _qgemm(node: Node, ctx: BuildContext) -> Kernel:
    alpha = float(attr(node, "alpha", 1.0))
    ta, tb = int(attr(node, "transA", 0)), int(attr(node, "transB", 0))

    def kernel(a: torch.Tensor, a_s: torch.Tensor, a_z: torch.Tensor | None, b: torch.Tensor,
               b_s: torch.Tensor, b_z: torch.Tensor | None, c: torch.Tensor | None = None,
               y_s: torch.Tensor | None = None, y_z: torch.Tensor | None = None) -> torch.Tensor:
        if ta:
            a = a.t()
        if tb:
            b = b.t()
        acc = _int_matmul(a, a_z, b, b_z)
        if c is not None:
            acc = acc + c.to(F64)
        y = acc.to(torch.float32) * (a_s.to(torch.float32) * b_s.to(torch.float32) * alpha)
        if y_s is None:
            return y
        return _quant(y, y_s, y_z, _qtype(y_z, a))

    return kernel


def _onnx_q(op: str) -> Factory:
    """The ONNX QuantizeLinear/DequantizeLinear kernels for the com.microsoft versions."""
    inner = ops_quant.KERNELS[op]

    def factory(node: Node, ctx: BuildContext) -> Kernel:
        return inner(dataclasses.replace(node, domain="", opset=19), ctx)  # type: ignore[call-arg]

    return factory


KERNELS: dict[str, Factory] = {
    MS + "MatMulNBits": _matmul_nbits,
    MS + "DynamicQuantizeMatMul": _dyn_quant_matmul,
    MS + "MatMulIntegerToFloat": _matmul_int_to_float,
    MS + "QLinearAdd": _qbinary(torch.add),
    MS + "QLinearMul": _qbinary(torch.mul),
    MS + "QLinearSigmoid": _qsigmoid,
    MS + "QLinearLeakyRelu": _qleaky,
    MS + "QLinearGlobalAveragePool": _qgap,
    MS + "QLinearConcat": _qconcat,
    MS + "QGemm": _qgemm,
    MS + "QuantizeLinear": _onnx_q("QuantizeLinear"),
    MS + "DequantizeLinear": _onnx_q("DequantizeLinear"),
}
