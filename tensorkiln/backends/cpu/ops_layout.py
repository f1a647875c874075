"""CPU kernels: padding and data-layout operators (Pad, CenterCropPad, DepthToSpace, ...)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

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

# ---------------------------------------------------------------------------- Pad

_PAD_MODES = ("constant", "reflect", "edge", "wrap")


def _pad_index(mode: str, n: int, before: int, after: int) -> torch.Tensor:
    """Source index along one axis for each output position (non-constant modes)."""
    j = torch.arange(-before, n + after, dtype=torch.int64)
    if n <= 0:
        raise ValueError(f"cannot {mode}-pad an axis of size {n}")
    if mode == "edge":
        return j.clamp_(0, n - 1)
    if mode == "wrap":
        return torch.remainder(j, n)
    if n == 1:
        return torch.zeros_like(j)
    period = 2 * (n - 1)
    p = torch.remainder(j, period)
    return torch.where(p >= n, period - p, p)


_TORCH_MODES = {"reflect": "reflect", "edge": "replicate", "wrap": "circular"}


def _torch_pad(x: torch.Tensor, widths: list[tuple[int, int]], mode: str) -> torch.Tensor | None:
    """F.pad for float tensors padded on (at most 3) trailing axes, where it agrees with ONNX."""
    if not x.dtype.is_floating_point or x.dtype == torch.float16:
        return None
    r = x.dim()
    first = next((a for a, (b, e) in enumerate(widths) if b or e), None)
    if first is None:
        return x
    k = r - first
    if k > 3 or r not in (k + 1, k + 2):
        return None
    for a in range(first, r):
        b, e = widths[a]
        n = x.shape[a]
        if b < 0 or e < 0 or (mode == "reflect" and max(b, e) >= n) or (mode == "wrap" and max(b, e) > n):
            return None
    flat: list[int] = []
    for b, e in reversed(widths[first:]):
        flat += [b, e]
    return F.pad(x, flat, mode=_TORCH_MODES[mode])


def pad_tensor(
    x: torch.Tensor,
    widths: list[tuple[int, int]],
    mode: str,
    value: float | int | bool = 0,
    cache: dict[tuple[int, int, int], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Pad (or crop, for negative widths) ``x``; ``widths[a] = (before, after)`` for each axis."""
    if all(b == 0 and e == 0 for b, e in widths):
        return x
    if mode == "constant":
        flat: list[int] = []
        for b, e in reversed(widths):
            flat += [b, e]
        if x.dtype == torch.bool:
            return F.pad(x.to(torch.uint8), flat, value=int(bool(value))).to(torch.bool)
        y = as_indexable(x)
        return from_indexable(F.pad(y, flat, value=value), x.dtype)
    fast = _torch_pad(x, widths, mode)
    if fast is not None:
        return fast
    y = x
    for a, (b, e) in enumerate(widths):
        if b == 0 and e == 0:
            continue
        n = y.shape[a]
        key = (n, b, e)
        idx = cache.get(key) if cache is not None else None
        if idx is None:
            idx = _pad_index(mode, n, b, e)
            if cache is not None and len(cache) < 256:
                cache[key] = idx
        y = y.index_select(a, idx)
    return y


def _pad(node: Node, ctx: Any) -> Kernel:
    mode = str(attr(node, "mode", "constant"))
    if mode not in _PAD_MODES or (mode == "wrap" and node.opset < 19):
        raise unsupported(node, f"pad mode {mode!r}")
    cache: dict[tuple[int, int, int], torch.Tensor] = {}
    if node.opset < 11:
        pads_attr = attr(node, "pads", attr(node, "paddings"))
        if pads_attr is None:
            raise bad_model(node, "Pad needs pads")
        pads_c: list[int] | None = [int(v) for v in pads_attr]
        value_c: Any = float(attr(node, "value", 0.0))
        axes_c: list[int] | None = None
        dyn_axes = False
    else:
        pads_c = const_ints(node, 1)
        cv = const_input(node, 2) if has_input(node, 2) else None
        value_c = cv.reshape(-1)[0].item() if cv is not None and cv.size else None
        axes_c = const_ints(node, 3) if has_input(node, 3) else None
        dyn_axes = has_input(node, 3) and axes_c is None

    def k(x: torch.Tensor, p: Any = None, c: Any = None, ax: Any = None) -> torch.Tensor:
        pads = pads_c if pads_c is not None else to_ints(p)
        axes = axes_c if not dyn_axes else to_ints(ax)
        r = x.dim()
        if axes is None:
            axes = list(range(r))
        na = len(axes)
        if len(pads) != 2 * na:
            raise ValueError(f"Pad: {len(pads)} pads for {na} axes")
        widths = [(0, 0)] * r
        for i, a in enumerate(axes):
            widths[norm_axis(a, r)] = (pads[i], pads[na + i])
        value: Any = 0
        if mode == "constant":
            if value_c is not None:
                value = value_c
            elif c is not None and c.numel():
                value = c.reshape(-1)[0].item()
        return pad_tensor(x, widths, mode, value, cache)

    return k


# ---------------------------------------------------------------------------- CenterCropPad


def _center_crop_pad(node: Node, ctx: Any) -> Kernel:
    axes_attr = attr(node, "axes")
    shape_c = const_ints(node, 1)

    def k(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        shape = shape_c if shape_c is not None else to_ints(s)
        r = x.dim()
        axes = list(range(r)) if axes_attr is None else [norm_axis(int(a), r) for a in axes_attr]
        widths = [(0, 0)] * r
        for a, sh in zip(axes, shape):
            dim = x.shape[a]
            if sh < dim:
                d = dim - sh
                widths[a] = (-(d // 2), -(d - d // 2))
            elif sh > dim:
                d = sh - dim
                widths[a] = (d // 2, d - d // 2)
        return pad_tensor(x, widths, "constant", 0)

    return k


# ---------------------------------------------------------------------------- DepthToSpace / SpaceToDepth


def _depth_to_space(node: Node, ctx: Any) -> Kernel:
    b = int(attr(node, "blocksize"))
    mode = str(attr(node, "mode", "DCR"))
    if mode not in ("DCR", "CRD"):
        raise unsupported(node, f"mode {mode!r}")

    def k(x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        oc = c // (b * b)
        if mode == "DCR":
            y = x.reshape(n, b, b, oc, h, w).permute(0, 3, 4, 1, 5, 2)
        else:
            y = x.reshape(n, oc, b, b, h, w).permute(0, 1, 4, 2, 5, 3)
        return y.reshape(n, oc, h * b, w * b)

    return k


def _space_to_depth(node: Node, ctx: Any) -> Kernel:
    b = int(attr(node, "blocksize"))
    mode = str(attr(node, "mode", "DCR"))
    if mode not in ("DCR", "CRD"):
        raise unsupported(node, f"mode {mode!r}")
    perm = (0, 3, 5, 1, 2, 4) if mode == "DCR" else (0, 1, 3, 5, 2, 4)

    def k(x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        y = x.reshape(n, c, h // b, b, w // b, b).permute(perm)
        return y.reshape(n, c * b * b, h // b, w // b)

    return k


# ---------------------------------------------------------------------------- ReverseSequence


def _reverse_sequence(node: Node, ctx: Any) -> Kernel:
    batch_axis = int(attr(node, "batch_axis", 1))
    time_axis = int(attr(node, "time_axis", 0))
    if {batch_axis, time_axis} != {0, 1}:
        raise unsupported(node, f"batch_axis={batch_axis}, time_axis={time_axis}")

    def k(x: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        t_len = x.shape[time_axis]
        nb = x.shape[batch_axis]
        t = torch.arange(t_len).unsqueeze(1)
        ln = lens.to(torch.int64).clamp(0, t_len).unsqueeze(0)
        idx = torch.where(t < ln, ln - 1 - t, t)  # (T, B)
        if time_axis > batch_axis:
            idx = idx.t()
        view = [1] * x.dim()
        view[time_axis] = t_len
        view[batch_axis] = nb
        idx = idx.reshape(view).expand(x.shape)
        return from_indexable(torch.gather(as_indexable(x), time_axis, idx), x.dtype)

    return k


KERNELS: dict[str, Factory] = {
    "Pad": _pad,
    "CenterCropPad": _center_crop_pad,
    "DepthToSpace": _depth_to_space,
    "SpaceToDepth": _space_to_depth,
    "ReverseSequence": _reverse_sequence,
}
