"""CPU kernels: indexing operators (Slice, Gather*, Scatter*, OneHot, NonZero, Compress)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from tensorkiln.backends.cpu.base import (
    Factory,
    Kernel,
    attr,
    bad_model,
    const_input,
    has_input,
    unsupported,
)
from tensorkiln.backends.cpu.ops_tensor import (
    as_indexable,
    const_ints,
    from_indexable,
    norm_axis,
    to_ints,
)
from tensorkiln.ir import Node

# ---------------------------------------------------------------------------- Slice


def slice_tensor(
    x: torch.Tensor,
    starts: list[int],
    ends: list[int],
    axes: list[int] | None,
    steps: list[int] | None,
) -> torch.Tensor:
    """ONNX Slice: clamping like Python slices, negative steps supported (view when steps > 0)."""
    r = x.dim()
    if axes is None:
        axes = list(range(len(starts)))
    if steps is None:
        steps = [1] * len(starts)
    index: list[slice] = [slice(None)] * r
    flips: list[int] = []
    for s, e, a, st in zip(starts, ends, axes, steps):
        if st == 0:
            raise ValueError("Slice step cannot be 0")
        ax = norm_axis(a, r)
        n = x.shape[ax]
        b, f, stp = slice(s, e, st).indices(n)
        if st > 0:
            index[ax] = slice(b, max(f, b), stp)
            continue
        cnt = len(range(b, f, stp))
        if cnt == 0:
            index[ax] = slice(0, 0)
            continue
        lo = b + (cnt - 1) * stp
        index[ax] = slice(lo, b + 1, -stp)
        flips.append(ax)
    y = x[tuple(index)]
    if flips:
        y = from_indexable(as_indexable(y).flip(flips), x.dtype)
    return y


def _slice(node: Node, ctx: Any) -> Kernel:
    if node.opset < 10:
        starts = [int(v) for v in attr(node, "starts")]
        ends = [int(v) for v in attr(node, "ends")]
        axes_a = attr(node, "axes")
        axes = None if axes_a is None else [int(v) for v in axes_a]

        def k_attr(x: torch.Tensor) -> torch.Tensor:
            return slice_tensor(x, starts, ends, axes, None)

        return k_attr
    consts = [const_ints(node, i) if has_input(node, i) else None for i in range(1, 5)]
    present = [has_input(node, i) for i in range(1, 5)]

    def k(x: torch.Tensor, *args: Any) -> torch.Tensor:
        vals: list[list[int] | None] = []
        for i in range(4):
            if consts[i] is not None:
                vals.append(consts[i])
            elif present[i] and i < len(args) and args[i] is not None:
                vals.append(to_ints(args[i]))
            else:
                vals.append(None)
        st, en, ax, sp = vals
        return slice_tensor(x, st or [], en or [], ax, sp)

    return k


# ---------------------------------------------------------------------------- Gather family


def _fix_negative(idx: torch.Tensor, dim: int | torch.Tensor) -> torch.Tensor:
    idx = idx.to(torch.int64)
    return torch.where(idx < 0, idx + dim, idx)


def _gather(node: Node, ctx: Any) -> Kernel:
    axis = int(attr(node, "axis", 0))
    ic = const_input(node, 1)
    if ic is not None and ic.ndim == 0 and int(ic) >= 0:
        i0 = int(ic)

        def k_scalar(x: torch.Tensor, _: Any) -> torch.Tensor:
            return x.select(norm_axis(axis, x.dim()), i0)

        return k_scalar
    nonneg = ic is not None and bool((np.asarray(ic) >= 0).all())

    def k(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        a = norm_axis(axis, x.dim())
        ii = idx.to(torch.int64) if nonneg else _fix_negative(idx, x.shape[a])
        y = as_indexable(x).index_select(a, ii.reshape(-1))
        y = y.reshape(*x.shape[:a], *idx.shape, *x.shape[a + 1 :])
        return from_indexable(y, x.dtype)

    return k


def _gather_elements(node: Node, ctx: Any) -> Kernel:
    axis = int(attr(node, "axis", 0))

    def k(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        a = norm_axis(axis, x.dim())
        ii = _fix_negative(idx, x.shape[a])
        return from_indexable(torch.gather(as_indexable(x), a, ii), x.dtype)

    return k


def _nd_linear(idx: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Row-major linear offsets of the index tuples in ``idx[..., len(dims)]``."""
    kd = len(dims)
    if kd == 0:
        return torch.zeros(idx.shape[:-1], dtype=torch.int64)
    dt = torch.tensor(dims, dtype=torch.int64)
    ii = idx.to(torch.int64)
    ii = torch.where(ii < 0, ii + dt, ii)
    strides = [1] * kd
    for j in range(kd - 2, -1, -1):
        strides[j] = strides[j + 1] * dims[j + 1]
    return (ii * torch.tensor(strides, dtype=torch.int64)).sum(-1)


def _gather_nd(node: Node, ctx: Any) -> Kernel:
    b = int(attr(node, "batch_dims", 0))

    def k(data: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        kd = indices.shape[-1]
        bshape = tuple(data.shape[:b])
        inner = tuple(data.shape[b : b + kd])
        rest = tuple(data.shape[b + kd :])
        nb = math.prod(bshape)
        d = as_indexable(data).reshape(nb, math.prod(inner), *rest)
        lin = _nd_linear(indices, inner).reshape(nb, -1)
        y = d[torch.arange(nb).unsqueeze(1), lin]
        y = y.reshape(*indices.shape[:-1], *rest)
        return from_indexable(y, data.dtype)

    return k


# ---------------------------------------------------------------------------- Scatter family

_REDUCE = {"add": "sum", "mul": "prod", "max": "amax", "min": "amin"}


def _reduction(node: Node, min_opset_minmax: int = 18) -> str:
    red = str(attr(node, "reduction", "none"))
    if red not in ("none", *_REDUCE):
        raise unsupported(node, f"reduction {red!r}")
    if red in ("max", "min") and node.opset < min_opset_minmax:
        raise bad_model(node, f"reduction {red!r} needs opset 18")
    return red


def _scatter_nd(node: Node, ctx: Any) -> Kernel:
    red = _reduction(node)

    def k(data: torch.Tensor, indices: torch.Tensor, updates: torch.Tensor) -> torch.Tensor:
        kd = indices.shape[-1]
        inner = tuple(data.shape[:kd])
        rest = tuple(data.shape[kd:])
        signed = red in ("none", "add", "mul")
        out = (as_indexable(data) if signed else data).clone(memory_format=torch.contiguous_format)
        upd = (as_indexable(updates) if signed else updates).reshape(-1, *rest)
        flat = out.view(math.prod(inner), *rest)
        lin = _nd_linear(indices, inner).reshape(-1)
        if red == "none":
            flat[lin] = upd
        elif red == "add":
            flat.index_add_(0, lin, upd)
        else:
            li = lin.reshape(-1, *([1] * len(rest))).expand(upd.shape)
            flat.scatter_reduce_(0, li, upd, _REDUCE[red], include_self=True)
        return from_indexable(out, data.dtype)

    return k


def _scatter_elements(node: Node, ctx: Any) -> Kernel:
    axis = int(attr(node, "axis", 0))
    red = "none" if node.op_type == "Scatter" else _reduction(node)

    def k(data: torch.Tensor, indices: torch.Tensor, updates: torch.Tensor) -> torch.Tensor:
        a = norm_axis(axis, data.dim())
        ii = _fix_negative(indices, data.shape[a])
        if red == "none":
            y = torch.scatter(as_indexable(data), a, ii, as_indexable(updates))
            return from_indexable(y, data.dtype)
        if red in ("add", "mul"):
            y = torch.scatter_reduce(as_indexable(data), a, ii, as_indexable(updates), _REDUCE[red])
            return from_indexable(y, data.dtype)
        return torch.scatter_reduce(data, a, ii, updates, _REDUCE[red])

    return k


# ---------------------------------------------------------------------------- OneHot / NonZero / Compress


def _one_hot(node: Node, ctx: Any) -> Kernel:
    axis = int(attr(node, "axis", -1))

    def k(indices: torch.Tensor, depth: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        d = int(depth.reshape(-1)[0].item())
        idx = indices.to(torch.int64)
        idx = torch.where(idx < 0, idx + d, idx)
        r = idx.dim() + 1
        a = norm_axis(axis, r)
        shape = [1] * r
        shape[a] = d
        eq = idx.unsqueeze(a) == torch.arange(d).reshape(shape)
        v = values.reshape(-1)
        return torch.where(eq, v[1], v[0])

    return k


def _non_zero(node: Node, ctx: Any) -> Kernel:
    def k(x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 0:
            x = x.reshape(1)
        return torch.nonzero(x != 0).t().contiguous()

    return k


def _compress(node: Node, ctx: Any) -> Kernel:
    axis = attr(node, "axis")

    def k(x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        c = cond.reshape(-1).to(torch.bool)
        if axis is None:
            x = x.reshape(-1)
            a = 0
        else:
            a = norm_axis(int(axis), x.dim())
        idx = torch.nonzero(c[: x.shape[a]]).reshape(-1)
        return x.index_select(a, idx)

    return k


KERNELS: dict[str, Factory] = {
    "Slice": _slice,
    "Gather": _gather,
    "GatherElements": _gather_elements,
    "GatherND": _gather_nd,
    "ScatterND": _scatter_nd,
    "ScatterElements": _scatter_elements,
    "Scatter": _scatter_elements,
    "OneHot": _one_hot,
    "NonZero": _non_zero,
    "Compress": _compress,
}
