"""CPU kernels: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear.

Integer quantized types only (int8/uint8/int16/uint16, and int32 for dequantization);
float8, 4-bit and 2-bit types are reported unsupported. The arithmetic follows the
ONNX reference: ``x / scale`` in the scale's type (float64 for integer ``x``), rounding
half to even, saturation to the output type's range.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from tensorkiln.backends.cpu.base import (
    Factory,
    Kernel,
    attr,
    const_input,
    has_input,
    torch_const,
    unsupported,
)
from tensorkiln.ir import DType, Node

RANGES: dict[DType, tuple[int, int]] = {
    DType.UINT8: (0, 255),
    DType.INT8: (-128, 127),
    DType.UINT16: (0, 65535),
    DType.INT16: (-32768, 32767),
}

_TORCH_RANGES = {dt.to_torch(): r for dt, r in RANGES.items()}


def expand_param(t: torch.Tensor, xshape: Sequence[int], axis: int, block: int) -> torch.Tensor:
    """Scale / zero point made broadcastable to x (per-tensor, per-axis or blocked)."""
    if t.dim() == 0 or t.numel() == 1:
        return t.reshape(())
    rank = len(xshape)
    ax = axis + rank if axis < 0 else axis
    if not block:
        dims = [1] * rank
        dims[ax] = t.numel()
        return t.reshape(dims)
    t = t.repeat_interleave(block, dim=ax)
    if t.shape[ax] != xshape[ax]:
        t = t.narrow(ax, 0, xshape[ax])
    return t


def _param_fn(node: Node, i: int, axis: int, block: int) -> Any:
    """A function (tensor, x shape) → expanded tensor; precomputed for a constant input."""
    c = const_input(node, i)
    if c is None:
        return lambda t, xs: expand_param(t, xs, axis, block)
    ct = torch_const(c)
    if c.size == 1:
        fixed = ct.reshape(())
        return lambda t, xs: fixed
    cache: dict[tuple[int, ...], torch.Tensor] = {}

    def from_const(t: torch.Tensor, xs: Sequence[int]) -> torch.Tensor:
        key = tuple(xs)
        r = cache.get(key)
        if r is None:
            r = cache[key] = expand_param(ct, xs, axis, block)
        return r
    return from_const


def _qtype(node: Node) -> DType:
    """The quantized output type: zero point's type, else output_dtype, else uint8."""
    if has_input(node, 2) and node.inputs[2] is not None and node.inputs[2].dtype is not None:
        return node.inputs[2].dtype
    od = attr(node, "output_dtype", 0)
    if od:
        return DType.from_onnx(int(od))
    out = node.outputs[0].dtype
    return out if out is not None else DType.UINT8


def _quantize(node: Node, ctx: object) -> Kernel:
    axis = int(attr(node, "axis", 1))
    block = int(attr(node, "block_size", 0))
    qt = _qtype(node)
    if qt not in RANGES:
        raise unsupported(node, f"quantizing to {qt.name}")
    lo, hi = RANGES[qt]
    out_dt = qt.to_torch()
    prec = attr(node, "precision", 0)
    prec_dt = DType.from_onnx(int(prec)).to_torch() if prec else None
    scale_fn = _param_fn(node, 1, axis, block)
    zp_fn = _param_fn(node, 2, axis, block)

    def quantize(x: torch.Tensor, s: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        xs = x.shape
        st = scale_fn(s, xs)
        if prec_dt is not None:
            q = x.to(prec_dt) / st.to(prec_dt)
        elif not x.dtype.is_floating_point:
            q = x.to(torch.float64) / st.to(torch.float64)
        else:
            q = x / st
        q = torch.round(q)
        if q.dtype != torch.float64:
            q = q.to(torch.float32)
        if z is None:
            return q.clamp_(lo, hi).to(torch.int32).to(out_dt)
        q = q + zp_fn(z, xs).to(q.dtype)
        zlo, zhi = _TORCH_RANGES.get(z.dtype, (lo, hi))  # the zero point's type rules
        return q.clamp_(zlo, zhi).to(torch.int32).to(z.dtype)

    return quantize


def _dequantize(node: Node, ctx: object) -> Kernel:
    axis = int(attr(node, "axis", 1))
    block = int(attr(node, "block_size", 0))
    xv = node.inputs[0]
    if xv is not None and xv.dtype is not None and xv.dtype not in (*RANGES, DType.INT32):
        raise unsupported(node, f"dequantizing {xv.dtype.name}")
    od = attr(node, "output_dtype", 0)
    out_dt = DType.from_onnx(int(od)).to_torch() if od else None
    scale_fn = _param_fn(node, 1, axis, block)
    zp_fn = _param_fn(node, 2, axis, block)

    def dequantize(x: torch.Tensor, s: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        xs = x.shape
        ct = torch.float64 if x.dtype == torch.int32 else torch.float32
        dx = x.to(ct)
        if z is not None:
            dx = dx - zp_fn(z, xs).to(ct)
        y = dx * scale_fn(s, xs).to(ct)
        return y.to(out_dt or s.dtype)

    return dequantize


def _dynamic_quantize(node: Node, ctx: object) -> Kernel:
    def dql(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        xf = x.to(torch.float32)
        if xf.numel():
            mn, mx = torch.aminmax(xf)
            mn, mx = mn.clamp(max=0.0), mx.clamp(min=0.0)
        else:
            mn = mx = torch.zeros((), dtype=torch.float32)
        # all zeros: scale 1 (as onnxruntime; the reference's comment says so too)
        scale = torch.where(mx == mn, torch.ones_like(mx), (mx - mn) / 255.0)
        zp = torch.round((0.0 - mn / scale).clamp(0.0, 255.0))
        y = (torch.round(xf / scale) + zp).clamp_(0.0, 255.0)
        return y.to(torch.uint8), scale.to(x.dtype), zp.to(torch.uint8)

    return dql


KERNELS: dict[str, Factory] = {
    "QuantizeLinear": _quantize,
    "DequantizeLinear": _dequantize,
    "DynamicQuantizeLinear": _dynamic_quantize,
}
