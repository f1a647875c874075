"""CPU kernels: shape and layout operators (Reshape, Transpose, Concat, Split, ...).

Also holds small helpers shared by the index/layout/image families: reading shape-like
inputs (constant → precomputed in the factory, else ``.tolist()`` per call) and
reinterpreting unsigned tensors whose dtypes ATen cannot index.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
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
    torch_const,
    torch_dtype,
)
from tensorkiln.backends.cpu.native.chain import NativeCall
from tensorkiln.ir import Node

# ---------------------------------------------------------------------------- helpers

_SIGNED_TWIN = {torch.uint16: torch.int16, torch.uint32: torch.int32, torch.uint64: torch.int64}


def as_indexable(x: torch.Tensor) -> torch.Tensor:
    """A same-width signed view of uint16/32/64 tensors (ATen lacks gather/scatter for them)."""
    tw = _SIGNED_TWIN.get(x.dtype)
    return x if tw is None else x.view(tw)


def from_indexable(y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return y if y.dtype == dtype else y.view(dtype)


def const_ints(node: Node, i: int) -> list[int] | None:
    """Input ``i`` as a list of ints when it is a constant (None when dynamic or absent)."""
    c = const_input(node, i)
    if c is None:
        return None
    return [int(v) for v in np.asarray(c).reshape(-1).tolist()]


def to_ints(t: torch.Tensor | None) -> list[int]:
    if t is None:
        return []
    return [int(v) for v in t.reshape(-1).tolist()]


def norm_axis(axis: int, rank: int) -> int:
    a = axis + rank if axis < 0 else axis
    if not 0 <= a < max(rank, 1):
        raise IndexError(f"axis {axis} is out of range for rank {rank}")
    return a


def int_attr_or_input(node: Node, name: str, index: int, opset_input: int) -> tuple[list[int] | None, bool]:
    """Ints taken from attribute ``name`` (before ``opset_input``) or input ``index``.

    Returns ``(values, dynamic)``: ``values`` is None with ``dynamic`` False when absent,
    and None with ``dynamic`` True when the input is a run-time tensor.
    """
    if node.opset < opset_input:
        v = attr(node, name)
        return (None if v is None else [int(a) for a in v]), False
    if not has_input(node, index):
        return None, False
    c = const_ints(node, index)
    return c, c is None


# ---------------------------------------------------------------------------- Reshape


def _reshape_shape(in_shape: Sequence[int], target: Sequence[int], allowzero: bool) -> list[int]:
    out = list(target)
    if not allowzero:
        for i, d in enumerate(out):
            if d == 0:
                out[i] = in_shape[i]
    if -1 in out:
        i = out.index(-1)
        known = math.prod(d for j, d in enumerate(out) if j != i)
        numel = math.prod(in_shape)
        out[i] = numel // known if known else 0
    return out


def _reshape(node: Node, ctx: Any) -> Kernel:
    allowzero = bool(attr(node, "allowzero", 0))
    if node.opset < 5:
        target = [int(v) for v in attr(node, "shape", [])]
    else:
        target = const_ints(node, 1)  # type: ignore[assignment]
    if target is None:

        def k_dyn(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
            return x.reshape(_reshape_shape(x.shape, to_ints(s), allowzero))

        return k_dyn
    if -1 not in target and (allowzero or 0 not in target):
        fixed = tuple(target)

        def k_fixed(x: torch.Tensor, *_: Any) -> torch.Tensor:
            return x.reshape(fixed)

        return k_fixed

    def k_const(x: torch.Tensor, *_: Any) -> torch.Tensor:
        return x.reshape(_reshape_shape(x.shape, target, allowzero))

    return k_const


def _flatten(node: Node, ctx: Any) -> Kernel:
    axis = int(attr(node, "axis", 1))

    def k(x: torch.Tensor) -> torch.Tensor:
        r = x.dim()
        a = axis + r if axis < 0 else axis
        return x.reshape(math.prod(x.shape[:a]), math.prod(x.shape[a:]))

    def plan(x: torch.Tensor) -> NativeCall | None:
        """A view of the input (no call): lets a chain run through the Flatten between two layers."""
        y = k(x)
        return NativeCall(y, None, []) if y.untyped_storage().data_ptr() == x.untyped_storage().data_ptr() else None

    k.plan = plan  # type: ignore[attr-defined]
    return k


def _transpose(node: Node, ctx: Any) -> Kernel:
    perm = attr(node, "perm")
    if perm is None:

        def k_rev(x: torch.Tensor) -> torch.Tensor:
            return x.permute(*range(x.dim() - 1, -1, -1))

        return k_rev
    p = tuple(int(v) for v in perm)

    def k(x: torch.Tensor) -> torch.Tensor:
        return x.permute(p)

    return k


# ---------------------------------------------------------------------------- Squeeze / Unsqueeze


def _squeeze(node: Node, ctx: Any) -> Kernel:
    axes, dynamic = int_attr_or_input(node, "axes", 1, 13)

    def squeeze(x: torch.Tensor, ax: list[int] | None) -> torch.Tensor:
        if ax is None:
            return x.squeeze()
        if not ax:
            return x
        r = x.dim()
        return x.squeeze(tuple(norm_axis(a, r) for a in ax))

    if dynamic:

        def k_dyn(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
            return squeeze(x, to_ints(a))

        return k_dyn

    def k(x: torch.Tensor, *_: Any) -> torch.Tensor:
        return squeeze(x, axes)

    return k


def _unsqueeze_shape(shape: Sequence[int], axes: Sequence[int]) -> list[int]:
    r = len(shape) + len(axes)
    norm = sorted(norm_axis(a, r) for a in axes)
    out: list[int] = []
    it = iter(shape)
    na = set(norm)
    if len(na) != len(norm):
        raise ValueError(f"Unsqueeze axes {list(axes)} repeat an axis")
    for i in range(r):
        out.append(1 if i in na else next(it))
    return out


def _unsqueeze(node: Node, ctx: Any) -> Kernel:
    axes, dynamic = int_attr_or_input(node, "axes", 1, 13)
    if dynamic:

        def k_dyn(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
            return x.reshape(_unsqueeze_shape(x.shape, to_ints(a)))

        return k_dyn
    if axes is None:
        raise bad_model(node, "Unsqueeze needs axes")
    ax = axes

    def k(x: torch.Tensor, *_: Any) -> torch.Tensor:
        return x.reshape(_unsqueeze_shape(x.shape, ax))

    return k


# ---------------------------------------------------------------------------- Concat / Split


def _concat(node: Node, ctx: Any) -> Kernel:
    axis = int(attr(node, "axis", 1))

    def k(*xs: torch.Tensor) -> torch.Tensor:
        if len(xs) == 1:
            return xs[0]
        r = max(x.dim() for x in xs)
        # ONNX allows empty (0,) tensors only when ranks agree; be lenient like ORT
        parts = [x for x in xs if x.dim() == r or x.numel() > 0]
        return torch.cat(parts, dim=norm_axis(axis, r))

    def plan(*xs: torch.Tensor) -> NativeCall | None:
        """Channels of channels-last tensors: one native call (chains run through it)."""
        if len(xs) < 2 or any(x.dim() != 4 for x in xs) or norm_axis(axis, 4) != 1:
            return None
        from tensorkiln.backends.cpu.native.concat import concat_channels_plan

        return concat_channels_plan(xs)

    k.plan = plan  # type: ignore[attr-defined]
    return k


def _split_sizes(dim: int, n: int) -> list[int]:
    if dim % n == 0:
        return [dim // n] * n
    chunk = dim // n + 1
    sizes = [chunk] * n
    sizes[-1] = dim - chunk * (n - 1)
    if sizes[-1] < 0:  # more outputs than elements: trailing chunks empty
        sizes = [min(chunk, max(dim - chunk * i, 0)) for i in range(n)]
    return sizes


def _split(node: Node, ctx: Any) -> Kernel:
    axis = int(attr(node, "axis", 0))
    n_out = len(node.outputs)
    if node.opset >= 18 and attr(node, "num_outputs") is not None:
        n_out = int(attr(node, "num_outputs"))
    split, dynamic = int_attr_or_input(node, "split", 1, 13)

    def do(x: torch.Tensor, sizes: list[int] | None) -> tuple[torch.Tensor, ...]:
        a = norm_axis(axis, x.dim())
        if sizes is None or not sizes:
            sizes = _split_sizes(x.shape[a], n_out)
        return tuple(torch.split(x, sizes, dim=a))

    if dynamic:

        def k_dyn(x: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return do(x, to_ints(s))

        return k_dyn

    def k(x: torch.Tensor, *_: Any) -> tuple[torch.Tensor, ...]:
        return do(x, split)

    return k


# ---------------------------------------------------------------------------- Expand / Tile


def _expand(node: Node, ctx: Any) -> Kernel:
    shape = const_ints(node, 1)

    def k(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        target = shape if shape is not None else to_ints(s)
        return x.expand(torch.broadcast_shapes(tuple(x.shape), tuple(target)))

    return k


def _tile(node: Node, ctx: Any) -> Kernel:
    reps = const_ints(node, 1)

    def k(x: torch.Tensor, r: torch.Tensor, *_: Any) -> torch.Tensor:
        rr = reps if reps is not None else to_ints(r)
        if x.dim() == 0 or all(v == 1 for v in rr):
            return x
        return x.repeat(*rr)

    return k


# ---------------------------------------------------------------------------- Shape / Size / constants


def _shape(node: Node, ctx: Any) -> Kernel:
    start = attr(node, "start")
    end = attr(node, "end")
    sl = slice(None if start is None else int(start), None if end is None else int(end))

    def k(x: torch.Tensor) -> torch.Tensor:
        return torch.tensor(tuple(x.shape)[sl], dtype=torch.int64)

    return k


def _size(node: Node, ctx: Any) -> Kernel:
    def k(x: torch.Tensor) -> torch.Tensor:
        return torch.tensor(x.numel(), dtype=torch.int64)

    return k


def _constant_of_shape(node: Node, ctx: Any) -> Kernel:
    value = attr(node, "value")
    if value is None:
        value = np.zeros((1,), dtype=np.float32)
    value = np.asarray(value)
    if value.size != 1:
        raise bad_model(node, f"value must hold one element, got {value.size}")
    vt = torch_const(value.reshape(()))
    shape = const_ints(node, 0)

    def k(s: torch.Tensor) -> torch.Tensor:
        target = shape if shape is not None else to_ints(s)
        return vt.expand(target).clone()

    return k


def _range(node: Node, ctx: Any) -> Kernel:
    def k(start: torch.Tensor, limit: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        dt = start.dtype
        s, lim, d = start.item(), limit.item(), delta.item()
        if dt.is_floating_point:
            n = max(math.ceil((lim - s) / d), 0)
            return torch.arange(n, dtype=dt) * delta + start
        n = max(-((s - lim) // d), 0)
        return torch.arange(n, dtype=torch.int64).mul_(d).add_(s).to(dt)

    return k


def _eye_like(node: Node, ctx: Any) -> Kernel:
    kdiag = int(attr(node, "k", 0))
    dt = attr(node, "dtype")
    out_torch = None if dt is None else torch_dtype(int(dt))

    def k(x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2:
            raise ValueError(f"EyeLike needs a 2-D input, got rank {x.dim()}")
        n, m = x.shape
        r = torch.arange(n).unsqueeze(1)
        c = torch.arange(m).unsqueeze(0)
        return (c - r == kdiag).to(out_torch or x.dtype)

    return k


def _trilu(node: Node, ctx: Any) -> Kernel:
    upper = bool(attr(node, "upper", 1))
    kconst = const_ints(node, 1)

    def k(x: torch.Tensor, kk: torch.Tensor | None = None) -> torch.Tensor:
        kd = (kconst[0] if kconst else 0) if (kconst is not None or kk is None) else int(kk.item())
        y = as_indexable(x)
        y = torch.triu(y, kd) if upper else torch.tril(y, kd)
        return from_indexable(y, x.dtype)

    return k


KERNELS: dict[str, Factory] = {
    "Reshape": _reshape,
    "Flatten": _flatten,
    "Transpose": _transpose,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Concat": _concat,
    "Split": _split,
    "Expand": _expand,
    "Tile": _tile,
    "Shape": _shape,
    "Size": _size,
    "ConstantOfShape": _constant_of_shape,
    "Range": _range,
    "EyeLike": _eye_like,
    "Trilu": _trilu,
}

__all__ = [
    "KERNELS",
    "as_indexable",
    "const_ints",
    "from_indexable",
    "int_attr_or_input",
    "norm_axis",
    "to_ints",
]
