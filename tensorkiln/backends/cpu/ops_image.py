"""CPU kernels: Resize and Upsample.

The general path is separable: each resized axis gets a 1-D *plan* (source indices and
weights per output position, computed once per (input size, output size, scale, roi) in
float64 following the ONNX reference) and is applied with ``index_select`` (nearest) or a
few weighted ``index_select`` taps (linear/cubic, antialias). ``F.interpolate`` serves as
a fast path only for the combinations where it computes the same thing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tensorkiln.backends.cpu.base import Factory, Kernel, attr, bad_model, const_input, has_input, unsupported
from tensorkiln.backends.cpu.ops_tensor import as_indexable, from_indexable, norm_axis
from tensorkiln.ir import Node

_COORD_MODES = (
    "half_pixel",
    "half_pixel_symmetric",
    "pytorch_half_pixel",
    "align_corners",
    "asymmetric",
    "tf_crop_and_resize",
)
_NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil", "simple")


@dataclass(frozen=True)
class ResizeSpec:
    mode: str  # nearest | linear | cubic
    coord: str
    nearest: str
    cubic_a: float = -0.75
    exclude_outside: bool = False
    extrapolation: float = 0.0
    antialias: bool = False


# ---------------------------------------------------------------------------- 1-D plans (numpy, float64)


def _coeffs(spec: ResizeSpec, ratio: np.ndarray, scale: float) -> np.ndarray:
    """Weights (out, n) for the neighbours of each output position (ONNX reference)."""
    r = ratio[:, None]
    if spec.mode == "linear":
        if not spec.antialias:
            return np.concatenate([1 - r, r], axis=1)
        s = min(scale, 1.0)
        start = int(np.floor(-1 / s) + 1)
        args = (np.arange(start, 2 - start)[None, :] - r) * s
        c = np.clip(1 - np.abs(args), 0, 1)
        return c / c.sum(axis=1, keepdims=True)
    a = spec.cubic_a
    if not spec.antialias:
        return np.concatenate(
            [
                ((a * (r + 1) - 5 * a) * (r + 1) + 8 * a) * (r + 1) - 4 * a,
                ((a + 2) * r - (a + 3)) * r * r + 1,
                ((a + 2) * (1 - r) - (a + 3)) * (1 - r) * (1 - r) + 1,
                ((a * (2 - r) - 5 * a) * (2 - r) + 8 * a) * (2 - r) - 4 * a,
            ],
            axis=1,
        )
    s = min(scale, 1.0)
    i_start = int(np.floor(-2 / s) + 1)
    x = np.abs(s * (np.arange(i_start, 2 - i_start)[None, :] - r))
    x2, x3 = x * x, x * x * x
    c = np.where(
        x <= 1,
        (a + 2) * x3 - (a + 3) * x2 + 1,
        np.where(x < 2, a * x3 - 5 * a * x2 + 8 * a * x - 4 * a, 0.0),
    )
    return c / c.sum(axis=1, keepdims=True)


def _source_coords(spec: ResizeSpec, n_in: int, n_out: int, scale: float, roi: tuple[float, float]) -> np.ndarray:
    y = np.arange(n_out, dtype=np.float64)
    out_w = scale * n_in
    c = spec.coord
    if c == "align_corners":
        return np.zeros(n_out) if out_w == 1 else y * (n_in - 1) / (out_w - 1)
    if c == "asymmetric":
        return y / scale
    if c == "tf_crop_and_resize":
        # the roi arithmetic happens in float32, like the reference and onnxruntime
        r0, r1 = np.float32(roi[0]), np.float32(roi[1])
        d = float(r1 - r0)
        if out_w == 1:
            x = np.full(n_out, float(np.float32(d * (n_in - 1)) / np.float32(2)))
        else:
            x = y * d * (n_in - 1) / (out_w - 1)
        return x + float(r0 * np.float32(n_in - 1))
    if c == "pytorch_half_pixel":
        return np.full(n_out, -0.5) if out_w == 1 else (y + 0.5) / scale - 0.5
    if c == "half_pixel":
        return (y + 0.5) / scale - 0.5
    # half_pixel_symmetric
    adjustment = n_out / out_w
    offset = n_in / 2 * (1 - adjustment)
    return offset + (y + 0.5) / scale - 0.5


@dataclass
class Plan:
    idx: torch.Tensor  # (out,) for nearest, (out, n) otherwise; int64, clamped
    weights: torch.Tensor | None  # (out, n) float64
    extrapolate: torch.Tensor | None  # (out,) bool
    repeat: int = 0  # nearest plans that are out[i] = in[i // repeat]: a broadcast copy


def make_plan(spec: ResizeSpec, n_in: int, n_out: int, scale: float, roi: tuple[float, float]) -> Plan:
    x = _source_coords(spec, n_in, n_out, scale, roi)
    # float64 fuzz must not move a coordinate off an integer or a half (where the nearest
    # rounding rule decides); exact float32 math lands on them
    xr = np.rint(x * 2) / 2
    x = np.where(np.abs(x - xr) < 1e-9, xr, x)
    xi = np.floor(x).astype(np.int64)
    extrap = None
    if spec.coord == "tf_crop_and_resize":
        m = (x < 0) | (x > n_in - 1)
        extrap = torch.from_numpy(m) if m.any() else None
    if spec.mode == "nearest":
        frac = x - xi
        nm = spec.nearest
        if nm == "simple":  # Resize-10 / Upsample (onnxruntime): truncate, ceil when downsampling
            pick = np.ceil(x) if scale < 1 else np.trunc(x)
        elif nm == "floor":
            pick = np.floor(x)
        elif nm == "ceil":
            pick = np.ceil(x)
        elif nm == "round_prefer_ceil":
            pick = np.where(frac >= 0.5, xi + 1, xi)
        else:
            pick = np.where(frac > 0.5, xi + 1, xi)
        idx = np.clip(pick.astype(np.int64), 0, n_in - 1)
        rep = n_out // n_in if n_in and n_out % n_in == 0 else 0
        if extrap is not None or not (rep and np.array_equal(idx, np.arange(n_out) // rep)):
            rep = 0
        return Plan(torch.from_numpy(idx), None, extrap, rep)
    # ratio in (0, 1]: an integer coordinate counts as the right end of the cell to its left
    integer = x == xi
    ratio = np.where(integer, 1.0, x - xi)
    base = np.where(integer, xi - 1, xi)
    w = _coeffs(spec, ratio, scale)
    n = w.shape[1]  # always even: the taps are base + 1 - n/2 ... base + n/2
    nb = base[:, None] + (1 - n // 2) + np.arange(n)[None, :]
    if spec.exclude_outside:
        w = np.where((nb < 0) | (nb >= n_in), 0.0, w)
        tot = w.sum(axis=1, keepdims=True)
        w = w / np.where(tot == 0, 1.0, tot)
    idx = np.clip(nb, 0, n_in - 1)
    return Plan(torch.from_numpy(idx), torch.from_numpy(w), extrap)


def apply_plan(y: torch.Tensor, axis: int, plan: Plan, extrapolation: float) -> torch.Tensor:
    if plan.weights is None:
        out = y.index_select(axis, plan.idx)
    else:
        w = plan.weights.to(y.dtype)
        shape = [1] * y.dim()
        shape[axis] = w.shape[0]
        out = None
        for t in range(w.shape[1]):
            term = y.index_select(axis, plan.idx[:, t]) * w[:, t].reshape(shape)
            out = term if out is None else out.add_(term)
        assert out is not None
    if plan.extrapolate is not None:
        shape = [1] * y.dim()
        shape[axis] = plan.extrapolate.shape[0]
        fill = torch.tensor(extrapolation, dtype=out.dtype)
        out = torch.where(plan.extrapolate.reshape(shape), fill, out)
    return out


# ---------------------------------------------------------------------------- the resize driver


def _repeat_axes(x: torch.Tensor, reps: dict[int, int]) -> torch.Tensor:
    """Nearest upsampling by integer factors as one broadcast copy."""
    view: list[int] = []
    full: list[int] = []
    out: list[int] = []
    for a, d in enumerate(x.shape):
        f = reps.get(a, 1)
        view += [d, 1] if f > 1 else [d]
        full += [d, f] if f > 1 else [d]
        out.append(d * f)
    return x.reshape(view).expand(full).reshape(out)


def _cast_back(y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if y.dtype == dtype:
        return y
    if dtype.is_floating_point:
        if dtype == torch.float16:
            y = y.clamp(-65504.0, 65504.0)
        return y.to(dtype)
    info = torch.iinfo(dtype)
    return y.round().clamp(info.min, info.max).to(dtype)


class Resizer:
    """Resolves sizes/scales per call and runs the separable resize (plans cached)."""

    def __init__(self, spec: ResizeSpec, axes: list[int] | None, policy: str) -> None:
        self.spec = spec
        self.axes = axes
        self.policy = policy
        self.cache: dict[tuple[Any, ...], Plan] = {}

    def targets(
        self, x: torch.Tensor, scales: list[float] | None, sizes: list[int] | None
    ) -> tuple[list[int], list[float], list[int]]:
        r = x.dim()
        axes = list(range(r)) if self.axes is None else [norm_axis(a, r) for a in self.axes]
        ins = [int(x.shape[a]) for a in axes]
        if sizes:
            if len(sizes) != len(axes):
                raise ValueError(f"Resize: {len(sizes)} sizes for {len(axes)} axes")
            sc = [o / i if i else 1.0 for o, i in zip(sizes, ins)]
            outs = list(sizes)
            if self.policy != "stretch":
                s = min(sc) if self.policy == "not_larger" else max(sc)
                sc = [s] * len(axes)
                outs = [int(s * i + 0.5) for i in ins]
        elif scales:
            if len(scales) != len(axes):
                raise ValueError(f"Resize: {len(scales)} scales for {len(axes)} axes")
            sc = list(scales)
            outs = [int(s * i) for s, i in zip(sc, ins)]
        else:
            raise ValueError("Resize needs scales or sizes")
        return axes, sc, outs

    def __call__(
        self,
        x: torch.Tensor,
        scales: list[float] | None,
        sizes: list[int] | None,
        roi: list[float] | None,
    ) -> torch.Tensor:
        axes, sc, outs = self.targets(x, scales, sizes)
        spec = self.spec
        r = x.dim()
        rois: list[tuple[float, float]] = [(0.0, 1.0)] * len(axes)
        if spec.coord == "tf_crop_and_resize" and roi:
            nr = len(roi) // 2
            full = nr == r and len(axes) != r
            for j, a in enumerate(axes):
                k = a if full else j
                rois[j] = (float(roi[k]), float(roi[nr + k]))
        todo = [
            (a, s, o, ro)
            for a, s, o, ro in zip(axes, sc, outs, rois)
            if not (math.isclose(s, 1.0) and o == x.shape[a] and math.isclose(ro[0], 0) and math.isclose(ro[1], 1))
        ]
        if not todo:
            return x
        fast = self._fast(x, todo)
        if fast is not None:
            return fast
        dtype = x.dtype
        nearest = spec.mode == "nearest"
        if nearest:
            y = as_indexable(x)
        else:
            y = x if dtype in (torch.float32, torch.float64) else x.to(torch.float32)
        plans = []
        for a, s, o, ro in todo:
            key = (int(x.shape[a]), o, s, ro)
            plan = self.cache.get(key)
            if plan is None:
                plan = make_plan(spec, int(x.shape[a]), o, s, ro)
                if len(self.cache) < 256:
                    self.cache[key] = plan
            plans.append((a, plan))
        if nearest and all(p.repeat for _, p in plans):
            return _repeat_axes(x, {a: p.repeat for a, p in plans})
        for a, plan in plans:
            y = apply_plan(y, a, plan, spec.extrapolation)
        if nearest:
            return from_indexable(y, dtype)
        return _cast_back(y, dtype)

    def _fast(self, x: torch.Tensor, todo: list[tuple[int, float, int, tuple[float, float]]]) -> torch.Tensor | None:
        """F.interpolate for linear/cubic over the trailing spatial axes, where it matches ONNX."""
        spec = self.spec
        r = x.dim()
        if spec.mode == "nearest" or spec.antialias or x.dtype not in (torch.float32, torch.float64):
            return None
        if r not in (3, 4, 5) or any(a < 2 for a, *_ in todo):
            return None
        if spec.mode == "cubic" and (r != 4 or spec.cubic_a != -0.75 or spec.exclude_outside):
            return None
        coord = spec.coord
        if coord == "pytorch_half_pixel" and all(o > 1 for _, _, o, _ in todo):
            coord = "half_pixel"
        if coord not in ("half_pixel", "align_corners"):
            return None
        size = list(x.shape[2:])
        scl = [1.0] * (r - 2)
        for a, s, o, _ in todo:
            size[a - 2] = o
            scl[a - 2] = s
        if any(o == 0 for o in size):
            return None
        mode = {3: "linear", 4: "bilinear", 5: "trilinear"}[r] if spec.mode == "linear" else "bicubic"
        align = coord == "align_corners"
        if align:
            # ONNX divides by (scale * in - 1), torch by (out - 1): equal only when scale * in == out
            if any(s * x.shape[a] != o for a, s, o, _ in todo):
                return None
            return F.interpolate(x, size=size, mode=mode, align_corners=True)
        # half_pixel uses the given scale: torch takes 1/scale_factor when it is passed
        # without recomputation (and the output size must then be floor(in * scale)).
        if [int(s * i) for s, i in zip(scl, x.shape[2:])] == size:
            return F.interpolate(x, scale_factor=scl, mode=mode, align_corners=False, recompute_scale_factor=False)
        return None


# ---------------------------------------------------------------------------- factories


def _floats(v: np.ndarray | None) -> list[float] | None:
    return None if v is None else [float(a) for a in np.asarray(v).reshape(-1)]


def _resize(node: Node, ctx: Any) -> Kernel:
    mode = str(attr(node, "mode", "nearest"))
    if mode == "bilinear":
        mode = "linear"
    if mode not in ("nearest", "linear", "cubic") or (mode == "cubic" and node.opset < 11):
        raise unsupported(node, f"mode {mode!r}")
    legacy = node.op_type == "Upsample" or node.opset < 11
    if legacy:
        coord, nearest = "asymmetric", "simple"
    else:
        coord = str(attr(node, "coordinate_transformation_mode", "half_pixel"))
        nearest = str(attr(node, "nearest_mode", "round_prefer_floor"))
        if coord == "tf_half_pixel_for_nn":
            raise unsupported(node, "coordinate_transformation_mode 'tf_half_pixel_for_nn'")
        if coord not in _COORD_MODES or (coord == "half_pixel_symmetric" and node.opset < 19):
            raise unsupported(node, f"coordinate_transformation_mode {coord!r}")
        if nearest not in _NEAREST_MODES[:4]:
            raise unsupported(node, f"nearest_mode {nearest!r}")
    antialias = bool(attr(node, "antialias", 0))
    if antialias and mode == "nearest":
        raise bad_model(node, "antialias is not defined for mode 'nearest'")
    spec = ResizeSpec(
        mode=mode,
        coord=coord,
        nearest=nearest,
        cubic_a=float(attr(node, "cubic_coeff_a", -0.75)),
        exclude_outside=bool(attr(node, "exclude_outside", 0)),
        extrapolation=float(attr(node, "extrapolation_value", 0.0)),
        antialias=antialias,
    )
    axes_a = attr(node, "axes")
    policy = str(attr(node, "keep_aspect_ratio_policy", "stretch"))
    if policy not in ("stretch", "not_larger", "not_smaller"):
        raise unsupported(node, f"keep_aspect_ratio_policy {policy!r}")
    run = Resizer(spec, None if axes_a is None else [int(a) for a in axes_a], policy)

    if node.op_type == "Upsample" and node.opset < 9:
        sc = attr(node, "scales")
        if sc is None:
            raise bad_model(node, "Upsample needs scales")
        scales_attr = [float(v) for v in sc]

        def k_attr(x: torch.Tensor) -> torch.Tensor:
            return run(x, scales_attr, None, None)

        return k_attr

    if legacy:  # Upsample-9 / Resize-10: (X, scales)
        sc_c = _floats(const_input(node, 1))

        def k_legacy(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
            return run(x, sc_c if sc_c is not None else _tolist_f(s), None, None)

        return k_legacy

    # Resize-11+: (X, roi, scales, sizes)
    consts: list[Any] = []
    for i in (1, 2, 3):
        c = const_input(node, i) if has_input(node, i) else None
        consts.append(_floats(c))
    roi_c, sc_c2, sz_c = consts

    def k(x: torch.Tensor, roi: Any = None, scales: Any = None, sizes: Any = None) -> torch.Tensor:
        ro = roi_c if roi_c is not None else _tolist_f(roi)
        sc = sc_c2 if sc_c2 is not None else _tolist_f(scales)
        sz = sz_c if sz_c is not None else _tolist_f(sizes)
        return run(x, sc or None, [int(v) for v in sz] if sz else None, ro)

    return k


def _tolist_f(t: torch.Tensor | None) -> list[float] | None:
    if t is None or t.numel() == 0:
        return None
    return [float(v) for v in t.reshape(-1).tolist()]


KERNELS: dict[str, Factory] = {
    "Resize": _resize,
    "Upsample": _resize,
}
