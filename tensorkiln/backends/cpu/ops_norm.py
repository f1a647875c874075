"""CPU kernels: normalization operators."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tensorkiln.backends.cpu.base import (
    Factory,
    Kernel,
    attr,
    const_input,
    torch_const,
    unsupported,
)
from tensorkiln.ir import Node

_LOW = (torch.float16, torch.bfloat16)


def _stash(node: Node) -> torch.dtype | None:
    """Stage-one compute type from ``stash_type`` (None: the input's own type)."""
    st = int(attr(node, "stash_type", 1))
    if st == 1:
        return torch.float32
    if st == 11:
        return torch.float64
    if st in (10, 16):
        return None
    raise unsupported(node, f"stash_type={st}")


def _up(x: torch.Tensor, stash: torch.dtype | None) -> torch.Tensor:
    if stash is not None and x.dtype != stash and x.dtype in (*_LOW, torch.float32):
        return x.to(stash)
    return x


def _channel_view(t: torch.Tensor, rank: int) -> torch.Tensor:
    return t.reshape(-1, *([1] * (rank - 2)))


# ---------------------------------------------------------------------------------------
# BatchNormalization


def _batchnorm(node: Node, ctx: object) -> Kernel:
    eps = float(attr(node, "epsilon", 1e-5))
    momentum = float(attr(node, "momentum", 0.9))
    training = bool(attr(node, "training_mode", 0)) if node.opset >= 14 else False
    if node.opset < 14 and len(node.outputs) > 1:
        raise unsupported(node, "training outputs (mean/var/saved_mean/saved_var) before opset 14")
    spatial = int(attr(node, "spatial", 1)) if node.opset < 9 else 1
    if training:
        if spatial != 1:
            raise unsupported(node, "training_mode with spatial=0")
        return _batchnorm_training(node, eps, momentum)
    consts = [const_input(node, i) for i in range(1, 5)]

    if spatial == 0:  # opset 7: per-activation statistics, shaped like x[1:]
        def bn_act(x: torch.Tensor, s: torch.Tensor, b: torch.Tensor, m: torch.Tensor,
                   v: torch.Tensor) -> torch.Tensor:
            shp = (1, *x.shape[1:])
            a = s.reshape(shp) / torch.sqrt(v.reshape(shp) + eps)
            return ((x - m.reshape(shp)) * a + b.reshape(shp)).to(x.dtype)
        return bn_act

    if all(c is not None for c in consts):
        s, b, m, v = (np.asarray(c, dtype=np.float64) for c in consts)  # type: ignore[arg-type]
        a = s / np.sqrt(v + eps)
        sh = b - m * a
        xdt = node.inputs[0].dtype if node.inputs[0] is not None else None
        npdt = xdt.to_numpy() if xdt is not None and xdt.is_float else np.dtype(np.float32)
        a_t = torch_const(a.astype(npdt))
        b_t = torch_const(sh.astype(npdt))
        views: dict[tuple[int, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

        def bn_const(x: torch.Tensor, *_: Any) -> torch.Tensor:
            key = (x.dim(), x.dtype)
            ab = views.get(key)
            if ab is None:
                ab = views[key] = (_channel_view(a_t, x.dim()).to(x.dtype),
                                   _channel_view(b_t, x.dim()).to(x.dtype))
            return torch.addcmul(ab[1], x, ab[0])
        return bn_const

    def bn(x: torch.Tensor, s: torch.Tensor, b: torch.Tensor, m: torch.Tensor,
           v: torch.Tensor) -> torch.Tensor:
        ct = torch.float64 if x.dtype == torch.float64 else torch.float32
        a = s.to(ct) / torch.sqrt(v.to(ct) + eps)
        sh = b.to(ct) - m.to(ct) * a
        r = x.dim()
        return torch.addcmul(_channel_view(sh, r).to(x.dtype), x, _channel_view(a, r).to(x.dtype))
    return bn


def _batchnorm_training(node: Node, eps: float, momentum: float) -> Kernel:
    n_out = len(node.outputs)

    def bn_train(x: torch.Tensor, s: torch.Tensor, b: torch.Tensor, m: torch.Tensor,
                 v: torch.Tensor) -> Any:
        r = x.dim()
        dims = (0, *range(2, r))
        var, mean = torch.var_mean(x, dims, correction=0)
        y = (x - _channel_view(mean, r)) / torch.sqrt(_channel_view(var, r) + eps)
        y = (y * _channel_view(s, r) + _channel_view(b, r)).to(x.dtype)
        if n_out == 1:
            return y
        rm = (m * momentum + mean * (1 - momentum)).to(m.dtype)
        rv = (v * momentum + var * (1 - momentum)).to(v.dtype)
        return (y, rm, rv)[:n_out]
    return bn_train


# ---------------------------------------------------------------------------------------
# InstanceNormalization, GroupNormalization


def _instancenorm(node: Node, ctx: object) -> Kernel:
    eps = float(attr(node, "epsilon", 1e-5))

    def inorm(x: torch.Tensor, s: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        xin = _up(x, torch.float32)
        y = F.group_norm(xin, x.shape[1], s.to(xin.dtype), b.to(xin.dtype), eps)
        return y.to(x.dtype)
    return inorm


def _groupnorm(node: Node, ctx: object) -> Kernel:
    eps = float(attr(node, "epsilon", 1e-5))
    groups = int(attr(node, "num_groups"))
    stash = _stash(node) if node.opset >= 21 else torch.float32
    per_group = node.opset < 21  # opset 18: scale/bias have one value per group

    def gnorm(x: torch.Tensor, s: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if per_group:
            s = s.repeat_interleave(c // groups)
            b = b.repeat_interleave(c // groups)
        r = x.dim()
        y = F.group_norm(_up(x, stash), groups, None, None, eps).to(x.dtype)
        return y * _channel_view(s, r).to(x.dtype) + _channel_view(b, r).to(x.dtype)
    return gnorm


# ---------------------------------------------------------------------------------------
# LayerNormalization, RMSNormalization


def _norm_shape(node: Node, t: torch.Tensor | None, nshape: list[int], xrank: int,
                ) -> torch.Tensor | None:
    """Scale/bias as a tensor of exactly the normalized shape, or None if it is wider."""
    if t is None:
        return None
    shape = list(t.shape)
    while shape and shape[0] == 1 and len(shape) > len(nshape):
        shape.pop(0)
    if len(shape) > len(nshape):
        return None
    return t.reshape(shape).expand(nshape)


def _layernorm(node: Node, ctx: object) -> Kernel:
    axis0 = int(attr(node, "axis", -1))
    eps = float(attr(node, "epsilon", 1e-5))
    stash = _stash(node)
    n_out = len(node.outputs)

    def lnorm(x: torch.Tensor, s: torch.Tensor, b: torch.Tensor | None = None) -> Any:
        r = x.dim()
        axis = axis0 + r if axis0 < 0 else axis0
        nshape = list(x.shape[axis:])
        xin = _up(x, stash)
        w = _norm_shape(node, s, nshape, r)
        bb = _norm_shape(node, b, nshape, r)
        wide = w is None or (b is not None and bb is None)
        if w is None or wide or n_out > 1 or xin is not x:
            y, mean, rstd = torch.native_layer_norm(xin, nshape, None, None, eps)
            y = y.to(x.dtype) * s.to(x.dtype)
            if b is not None:
                y = y + b.to(x.dtype)
            if n_out == 1:
                return y
            st = stash or x.dtype
            return (y, mean.to(st), rstd.to(st))[:n_out]
        return F.layer_norm(x, nshape, w.to(x.dtype), None if bb is None else bb.to(x.dtype), eps)
    return lnorm


def _rmsnorm(node: Node, ctx: object) -> Kernel:
    axis0 = int(attr(node, "axis", -1))
    eps = float(attr(node, "epsilon", 1e-5))
    stash = _stash(node)

    def rms(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        r = x.dim()
        axis = axis0 + r if axis0 < 0 else axis0
        nshape = list(x.shape[axis:])
        xin = _up(x, stash)
        y = F.rms_norm(xin, nshape, None, eps).to(x.dtype)
        return y * s.to(x.dtype)
    return rms


# ---------------------------------------------------------------------------------------
# MeanVarianceNormalization, LpNormalization


def _mvn(node: Node, ctx: object) -> Kernel:
    axes0 = [int(a) for a in (attr(node, "axes") or [0, 2, 3])]
    scale_var = True
    if node.opset < 9:  # MVN-1, reduced the way onnxruntime does: over the batch too
        axes0 = [0, 1, 2, 3] if int(attr(node, "across_channels", 0)) else [0, 2, 3]
        scale_var = bool(attr(node, "normalize_variance", 1))

    def mvn(x: torch.Tensor) -> torch.Tensor:
        r = x.dim()
        axes = tuple(a + r if a < 0 else a for a in axes0)
        if not scale_var:
            return x - x.mean(axes, keepdim=True)
        var, mean = torch.var_mean(x, axes, correction=0, keepdim=True)
        return (x - mean) / (torch.sqrt(var) + 1e-9)
    return mvn


def _lpnorm(node: Node, ctx: object) -> Kernel:
    axis = int(attr(node, "axis", -1))
    p = int(attr(node, "p", 2))
    if p not in (1, 2):
        raise unsupported(node, f"p={p} (only 1 and 2 exist)")

    def lpn(x: torch.Tensor) -> torch.Tensor:
        n = torch.linalg.vector_norm(x, p, axis, keepdim=True)
        return x / torch.where(n == 0, torch.ones_like(n), n)
    return lpn


KERNELS: dict[str, Factory] = {
    "BatchNormalization": _batchnorm,
    "InstanceNormalization": _instancenorm,
    "GroupNormalization": _groupnorm,
    "LayerNormalization": _layernorm,
    "RMSNormalization": _rmsnorm,
    "MeanVarianceNormalization": _mvn,
    "LpNormalization": _lpnorm,
}
