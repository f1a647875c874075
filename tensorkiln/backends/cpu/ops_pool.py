"""CPU kernels: pooling operators.

Windows follow ONNX (and onnxruntime): begin/end pads may differ, ``ceil_mode`` keeps a
last window only if it starts inside the input or its begin padding, and average pools
divide by the window's elements inside the input (``count_include_pad=0``) or inside
input + pads (``=1``; the extension added by ``ceil_mode`` never counts). ATen's pools
are used directly when their padding rules coincide; otherwise the input is padded
explicitly and summed with a depthwise convolution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from tensorkiln.backends.cpu.base import Factory, Kernel, attr, bad_model, unsupported
from tensorkiln.backends.cpu.native import chain as native_chain
from tensorkiln.backends.cpu.native import pool as native_pool
from tensorkiln.backends.cpu.native.chain import NativeCall
from tensorkiln.backends.cpu.ops_nn import Geometry, fpad_list, shape_cached
from tensorkiln.ir import Node

_MAX = {1: torch.max_pool1d, 2: torch.max_pool2d, 3: torch.max_pool3d}
_MAX_IDX = {1: F.max_pool1d_with_indices, 2: F.max_pool2d_with_indices, 3: F.max_pool3d_with_indices}
_AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def nhwc_for_pool(x: torch.Tensor) -> torch.Tensor:
    """ATen's 2-D pools are 4-13x faster on channels-last input once there are many channels
    (measured: max pool 3x3/2 on 1x64x112x112 NCHW 4.6 ms, converted + NHWC 1.1 ms; 65 ms vs
    9 ms at batch 16); with few channels or small planes the conversion costs more than it saves."""
    if x.dim() == 4 and x.dtype.is_floating_point and x.shape[1] >= 16 and x.numel() >= 1 << 15 and \
            not x.is_contiguous(memory_format=torch.channels_last):
        return x.contiguous(memory_format=torch.channels_last)
    return x


def _kernel_shape(node: Node) -> list[int]:
    ks = attr(node, "kernel_shape")
    if not ks:
        raise bad_model(node, "kernel_shape is required")
    return [int(k) for k in ks]


def _geometry(node: Node) -> tuple[Geometry, list[int], bool]:
    ks = _kernel_shape(node)
    geo = Geometry(node, len(ks), ks)
    ceil = bool(attr(node, "ceil_mode", 0))
    return geo, ks, ceil


def _torch_friendly(geo: Geometry, ks: Sequence[int], pb: Sequence[int], pe: Sequence[int]) -> bool:
    """ATen's pools take one symmetric pad per dim, at most half the effective window."""
    eff = geo.eff_kernel(ks)
    return list(pb) == list(pe) and all(2 * p <= k for p, k in zip(pb, eff))


def _window_plan(geo: Geometry, ks: Sequence[int], ceil: bool, xs: tuple[int, ...]
                 ) -> tuple[list[int], list[int], list[int], list[int]]:
    """(pb, pe, out, end pad actually needed for ``out`` windows over the padded input)."""
    pb, pe = geo.pads_for(xs, ks)
    out = geo.pool_out(xs, ks, pb, pe, ceil)
    need = [(o - 1) * s + k - n - b if o > 0 else -n - b
            for o, s, k, n, b in zip(out, geo.strides, geo.eff_kernel(ks), xs, pb)]
    return list(pb), list(pe), out, need


def _sum_pool(x: torch.Tensor, ones: torch.Tensor, stride: Sequence[int], dil: Sequence[int]) -> torch.Tensor:
    """Window sums over an already padded (N, C, *sp) tensor: depthwise conv with ones."""
    n, c = x.shape[0], x.shape[1]
    nsp = x.dim() - 2
    y = _CONV[nsp](x.reshape(n * c, 1, *x.shape[2:]), ones.to(x.dtype), None, stride, 0, dil)
    return y.reshape(n, c, *y.shape[2:])


# ---------------------------------------------------------------------------------------
# MaxPool


def _maxpool(node: Node, ctx: object) -> Kernel:
    geo, ks, ceil = _geometry(node)
    nsp = geo.nsp
    if nsp not in _MAX:
        raise unsupported(node, f"{nsp} spatial dims")
    order = int(attr(node, "storage_order", 0))
    want_idx = len(node.outputs) > 1
    pool, pool_idx = _MAX[nsp], _MAX_IDX[nsp]
    stride, dil = geo.strides, geo.dilations
    zeros = [0] * nsp
    ceil = ceil and geo.static

    @shape_cached
    def plan(xs: tuple[int, ...]) -> tuple[Any, ...]:
        pb, pe, _out, need = _window_plan(geo, ks, ceil, xs)
        if _torch_friendly(geo, ks, pb, pe):
            return None, pb
        return fpad_list(pb, need), pb

    native_ok = nsp == 2 and not want_idx and native_pool.available()

    @shape_cached
    def window(xs: tuple[int, ...]) -> tuple[list[int], list[int]]:
        pb, _pe, out, _need = _window_plan(geo, ks, ceil, xs)
        return pb, out

    def native_plan(x: torch.Tensor) -> NativeCall | None:
        if native_ok and x.dtype == torch.float32 and x.dim() == 4 and \
                x.is_contiguous(memory_format=torch.channels_last):
            pb, out = window(tuple(x.shape[2:]))
            return native_pool.maxpool2d_plan(x, ks, stride, pb, dil, out)
        return None

    def maxpool(x: torch.Tensor) -> Any:
        x = nhwc_for_pool(x)
        call = native_plan(x)
        if call is not None:
            return native_chain.run(call)
        padl, pb = plan(tuple(x.shape[2:]))
        if padl is None:
            xin, pads, mode = x, pb, ceil
        else:
            fill = -math.inf if x.dtype.is_floating_point else torch.iinfo(x.dtype).min
            xin, pads, mode = F.pad(x, padl, value=fill), zeros, False
        if not want_idx:
            return pool(xin, ks, stride, pads, dil, mode)
        y, idx = pool_idx(xin, ks, stride, pads, dil, mode)
        return y, _onnx_indices(idx, x.shape, xin.shape, None if padl is None else pb, order)

    if native_ok:
        maxpool.plan = native_plan  # type: ignore[attr-defined]
    return maxpool


def _onnx_indices(idx: torch.Tensor, xshape: torch.Size, pshape: torch.Size,
                  pb: Sequence[int] | None, order: int) -> torch.Tensor:
    """ATen's per-plane indices (into the possibly padded input) → ONNX flat indices."""
    sp = list(xshape[2:])
    if pb is not None or order == 1:
        psp = list(pshape[2:])
        coords = []
        rem = idx
        for d in reversed(psp):
            coords.append(rem % d)
            rem = rem // d
        coords.reverse()
        if pb is not None:
            coords = [c - b for c, b in zip(coords, pb)]
        idx = torch.zeros_like(idx)
        dims = list(range(len(sp)))
        if order == 1:
            dims.reverse()
        for i in dims:
            idx = idx * sp[i] + coords[i]
    plane = math.prod(sp)
    nc = xshape[0] * xshape[1]
    off = torch.arange(0, nc * plane, plane, dtype=torch.int64).reshape(
        xshape[0], xshape[1], *([1] * len(sp)))
    return idx + off


# ---------------------------------------------------------------------------------------
# AveragePool and LpPool


def _avgpool(node: Node, ctx: object) -> Kernel:
    geo, ks, ceil = _geometry(node)
    nsp = geo.nsp
    if nsp not in _AVG:
        raise unsupported(node, f"{nsp} spatial dims")
    incl = bool(attr(node, "count_include_pad", 0))
    stride, dil = geo.strides, geo.dilations
    pool = _AVG[nsp]
    ceil = ceil and geo.static
    ones = torch.ones(1, 1, *ks)
    no_dil = all(d == 1 for d in dil)

    @shape_cached
    def plan(xs: tuple[int, ...]) -> tuple[Any, ...]:
        pb, pe, _out, need = _window_plan(geo, ks, ceil, xs)
        if no_dil and _torch_friendly(geo, ks, pb, pe):
            return True, pb, None, None
        # divisor: window elements inside the input (or inside input + pads)
        mask = torch.zeros(1, 1, *[b + n + e for b, n, e in zip(pb, xs, need)])
        region = tuple(
            slice(0, b + n + min(p, max(e, 0))) if incl else slice(b, b + n)
            for b, n, p, e in zip(pb, xs, pe, need))
        mask[(slice(None), slice(None), *region)] = 1.0
        count = _sum_pool(mask, ones, stride, dil)
        return False, pb, fpad_list(pb, need), count

    def avgpool(x: torch.Tensor) -> torch.Tensor:
        fast, pb, padl, count = plan(tuple(x.shape[2:]))
        if fast:
            x = nhwc_for_pool(x)
            return pool(x, ks, stride, pb, ceil, incl)
        s = _sum_pool(F.pad(x, padl), ones, stride, dil)
        return s / count.to(x.dtype)

    return avgpool


def _lppool(node: Node, ctx: object) -> Kernel:
    geo, ks, ceil = _geometry(node)
    p = float(attr(node, "p", 2))
    stride, dil = geo.strides, geo.dilations
    ones = torch.ones(1, 1, *ks)
    if geo.nsp not in _CONV:
        raise unsupported(node, f"{geo.nsp} spatial dims")

    @shape_cached
    def plan(xs: tuple[int, ...]) -> list[int]:
        pb, _pe, _out, need = _window_plan(geo, ks, ceil, xs)
        return fpad_list(pb, need)

    def lppool(x: torch.Tensor) -> torch.Tensor:
        xp = F.pad(x, plan(tuple(x.shape[2:])))
        if p == 2.0:
            return _sum_pool(xp * xp, ones, stride, dil).sqrt()
        if p == 1.0:
            return _sum_pool(xp.abs(), ones, stride, dil)
        return _sum_pool(xp.abs().pow(p), ones, stride, dil).pow(1.0 / p)

    return lppool


# ---------------------------------------------------------------------------------------
# global pools


def _spatial_dims(x: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(2, x.dim()))


def _global_avg(node: Node, ctx: object) -> Kernel:
    def gap(x: torch.Tensor) -> torch.Tensor:
        call = native_pool.global_avg_pool_plan(x) if native_pool.available() else None
        return native_chain.run(call) if call is not None else x.mean(_spatial_dims(x), keepdim=True)

    if native_pool.available():  # channels-last float32 (a CNN's head): pool.c, chainable
        gap.plan = native_pool.global_avg_pool_plan  # type: ignore[attr-defined]
    return gap


def _global_max(node: Node, ctx: object) -> Kernel:
    def gmp(x: torch.Tensor) -> torch.Tensor:
        return x.amax(_spatial_dims(x), keepdim=True)

    return gmp


def _global_lp(node: Node, ctx: object) -> Kernel:
    p = float(attr(node, "p", 2))

    def glp(x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.vector_norm(x, p, _spatial_dims(x), keepdim=True)

    return glp


# ---------------------------------------------------------------------------------------
# MaxUnpool


def _maxunpool(node: Node, ctx: object) -> Kernel:
    ks = _kernel_shape(node)
    nsp = len(ks)
    strides = list(attr(node, "strides", None) or [1] * nsp)
    pads = list(attr(node, "pads", None) or [0] * (2 * nsp))

    def unpool(x: torch.Tensor, idx: torch.Tensor, out_shape: torch.Tensor | None = None) -> torch.Tensor:
        if out_shape is not None:
            shape = [int(v) for v in out_shape.tolist()]
        else:
            sp = [(n - 1) * s - (pads[i] + pads[nsp + i]) + k
                  for i, (n, s, k) in enumerate(zip(x.shape[2:], strides, ks))]
            shape = [x.shape[0], x.shape[1], *sp]
        y = torch.zeros(math.prod(shape), dtype=x.dtype)
        y.index_put_((idx.reshape(-1).long(),), x.reshape(-1))
        return y.reshape(shape)

    return unpool


KERNELS: dict[str, Factory] = {
    "MaxPool": _maxpool,
    "AveragePool": _avgpool,
    "LpPool": _lppool,
    "GlobalAveragePool": _global_avg,
    "GlobalMaxPool": _global_max,
    "GlobalLpPool": _global_lp,
    "MaxUnpool": _maxunpool,
}
