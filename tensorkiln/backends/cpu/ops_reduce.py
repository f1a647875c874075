"""CPU kernels: Reduce*, ArgMax/ArgMin, CumSum.

Reduce* axes are an attribute up to opset 12 (ReduceSum) / 17 (the others) and an
optional input afterwards, together with ``noop_with_empty_axes``: with no axes the op
reduces over every axis, or — when ``noop_with_empty_axes`` is set — returns its input.
Reducing over a size-0 axis gives the reduction's identity (0 for sums, 1 for the
product, -inf / the smallest integer / False for Max, and so on), as in ONNX's tests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from tensorkiln.backends.cpu.base import (
    BuildContext,
    Factory,
    Kernel,
    attr,
    bad_model,
    const_input,
    has_input,
    unsupported,
)
from tensorkiln.backends.cpu.ops_elementwise import UWIDE, in_dtype
from tensorkiln.ir import Node

Tensor = torch.Tensor
Dims = tuple[int, ...]
Reduction = Callable[[Tensor, Dims, bool], Tensor]


def _sum(x: Tensor, dims: Dims, keep: bool) -> Tensor:
    return torch.sum(x, dims, keep, dtype=x.dtype)


def _mean(x: Tensor, dims: Dims, keep: bool) -> Tensor:
    if x.is_floating_point():
        return torch.mean(x, dims, keep)
    count = 1
    for d in dims:
        count *= x.shape[d]
    return torch.div(_sum(x, dims, keep), max(count, 1), rounding_mode="trunc")


def _extreme(fn: Callable[..., Tensor], is_max: bool) -> Reduction:
    def red(x: Tensor, dims: Dims, keep: bool) -> Tensor:
        if x.numel() == 0 and x.dim() > 0 and any(x.shape[d] == 0 for d in dims):
            if x.dtype == torch.bool:
                fill: bool | int | float = not is_max
            elif x.is_floating_point():
                fill = -float("inf") if is_max else float("inf")
            else:
                info = torch.iinfo(x.dtype)
                fill = info.min if is_max else info.max
            return torch.full(_out_shape(x, dims, keep), fill, dtype=x.dtype)
        return fn(x, dims, keep)

    return red


def _prod(x: Tensor, dims: Dims, keep: bool) -> Tensor:
    y = x
    for d in sorted(dims, reverse=True):
        y = torch.prod(y, d, keepdim=True, dtype=x.dtype)
    if not keep and dims:
        y = y.reshape(_out_shape(x, dims, False))
    return y


def _as_float(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    return fn(x) if x.is_floating_point() else fn(x.double()).to(x.dtype)


def _l1(x: Tensor, dims: Dims, keep: bool) -> Tensor:
    return _sum(torch.abs(x), dims, keep)


def _sum_square(x: Tensor, dims: Dims, keep: bool) -> Tensor:
    return _sum(x * x, dims, keep)


def _l2(x: Tensor, dims: Dims, keep: bool) -> Tensor:
    return _as_float(torch.sqrt, _sum_square(x, dims, keep))


def _log_sum(x: Tensor, dims: Dims, keep: bool) -> Tensor:
    return _as_float(torch.log, _sum(x, dims, keep))


def _log_sum_exp(x: Tensor, dims: Dims, keep: bool) -> Tensor:
    if not x.is_floating_point():
        return torch.logsumexp(x.double(), dims, keep).to(x.dtype)
    if x.dim() == 0:
        return x.clone()
    return torch.logsumexp(x, dims, keep)


def _out_shape(x: Tensor, dims: Sequence[int], keep: bool) -> list[int]:
    if keep:
        return [1 if i in dims else n for i, n in enumerate(x.shape)]
    return [n for i, n in enumerate(x.shape) if i not in dims]


_REDUCTIONS: dict[str, Reduction] = {
    "ReduceSum": _sum,
    "ReduceMean": _mean,
    "ReduceMax": _extreme(torch.amax, True),
    "ReduceMin": _extreme(torch.amin, False),
    "ReduceProd": _prod,
    "ReduceL1": _l1,
    "ReduceL2": _l2,
    "ReduceLogSum": _log_sum,
    "ReduceLogSumExp": _log_sum_exp,
    "ReduceSumSquare": _sum_square,
}


def _normalize(axes: Sequence[int], rank: int) -> Dims:
    out = set()
    for a in axes:
        if not -rank <= a < max(rank, 1):
            raise ValueError(f"axis {a} is out of range for rank {rank}")
        out.add(a + rank if a < 0 else a)
    return tuple(sorted(out))


def _reduce(node: Node, ctx: BuildContext) -> Kernel:
    red = _REDUCTIONS[node.op_type]
    keep = bool(attr(node, "keepdims", 1))
    axes_as_input = node.opset >= (13 if node.op_type == "ReduceSum" else 18)
    noop = False
    axes: list[int] | None  # None: the axes input is not a constant
    if axes_as_input:
        noop = bool(attr(node, "noop_with_empty_axes", 0))
        if has_input(node, 1):
            c = const_input(node, 1)
            axes = None if c is None else [int(a) for a in c.reshape(-1)]
        else:
            axes = []
    else:
        axes = [int(a) for a in (attr(node, "axes", None) or [])]

    def run(x: Tensor, ax: Sequence[int]) -> Tensor:
        if x.dtype in UWIDE:
            return run(x.to(torch.int64), ax).to(x.dtype)
        if not ax:
            if noop:
                return x
            dims: Dims = tuple(range(x.dim()))
        else:
            dims = _normalize(ax, x.dim())
        return red(x, dims, keep)

    if axes is not None:
        fixed = axes
        x_in = node.inputs[0]
        if x_in is not None and x_in.shape is not None and x_in.dtype is not None:
            # rank and type known: settle the axes now, leave one ATen call per run
            if not fixed and noop:
                return lambda x, *_: x
            try:
                dims = _normalize(fixed, len(x_in.shape)) if fixed else tuple(range(len(x_in.shape)))
            except ValueError as e:
                raise bad_model(node, str(e)) from None
            if in_dtype(node, 0) not in UWIDE:
                return lambda x, *_: red(x, dims, keep)
        return lambda x, *_: run(x, fixed)

    def dynamic(x: Tensor, axes_t: Tensor | None = None) -> Tensor:
        return run(x, [] if axes_t is None else axes_t.reshape(-1).tolist())

    return dynamic


# --------------------------------------------------------------- ArgMax/ArgMin

def _arg(fn: Callable[..., Tensor]) -> Factory:
    def factory(node: Node, ctx: BuildContext) -> Kernel:
        axis = int(attr(node, "axis", 0))
        keep = bool(attr(node, "keepdims", 1))
        last = bool(attr(node, "select_last_index", 0))

        def k(x: Tensor) -> Tensor:
            if x.dtype == torch.bool:
                x = x.to(torch.uint8)
            elif x.dtype in UWIDE:
                x = x.to(torch.int64)
            if not last:
                return fn(x, axis, keep)
            d = axis + x.dim() if axis < 0 else axis
            return (x.shape[d] - 1) - fn(x.flip(d), d, keep)

        return k

    return factory


# ---------------------------------------------------------------------- CumSum

def _cumsum(node: Node, ctx: BuildContext) -> Kernel:
    exclusive = bool(attr(node, "exclusive", 0))
    reverse = bool(attr(node, "reverse", 0))
    c = const_input(node, 1)
    if c is not None and c.size != 1:
        raise unsupported(node, f"axis must be a scalar, got shape {c.shape}")
    const_axis = None if c is None else int(c.reshape(()))

    def k(x: Tensor, axis_t: Tensor) -> Tensor:
        axis = const_axis if const_axis is not None else int(axis_t.reshape(()))
        d = axis + x.dim() if axis < 0 else axis
        wide = x.dtype if x.dtype in UWIDE else None
        if wide is not None:
            x = x.to(torch.int64)
        if reverse:
            x = x.flip(d)
        y = torch.cumsum(x, d, dtype=x.dtype)
        n = x.shape[d]
        if exclusive and n > 0:
            zero = torch.zeros_like(y.narrow(d, 0, 1))
            y = torch.cat([zero, y.narrow(d, 0, n - 1)], d)
        if reverse:
            y = y.flip(d)
        return y if wide is None else y.to(wide)

    return k


KERNELS: dict[str, Factory] = {
    **{op: _reduce for op in _REDUCTIONS},
    "ArgMax": _arg(torch.argmax),
    "ArgMin": _arg(torch.argmin),
    "CumSum": _cumsum,
}
