"""CPU kernels: nn operators (Conv, ConvTranspose, LRN) and the spatial helpers pooling
and the integer convolutions share (pads, auto_pad, output sizes)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from tensorkiln.backends.cpu.base import Factory, Kernel, attr, const_input, unsupported
from tensorkiln.ir import Node

# ---------------------------------------------------------------------------------------
# spatial geometry helpers (shared with ops_pool and ops_qlinear)


def n_spatial(node: Node, weight_index: int | None = None) -> int | None:
    """Number of spatial dims, from whatever is known at build time (None if nothing is)."""
    if weight_index is not None:
        w = const_input(node, weight_index)
        if w is not None:
            return int(w.ndim) - 2
        if weight_index < len(node.inputs):
            wv = node.inputs[weight_index]
            if wv is not None and wv.shape is not None:
                return len(wv.shape) - 2
    for name in ("kernel_shape", "strides", "dilations"):
        v = attr(node, name)
        if v:
            return len(v)
    pads = attr(node, "pads")
    if pads:
        return len(pads) // 2
    x = node.inputs[0] if node.inputs else None
    if x is not None and x.shape is not None:
        return len(x.shape) - 2
    return None


def auto_pads(mode: str, in_sizes: Sequence[int], eff_k: Sequence[int], strides: Sequence[int]
              ) -> tuple[list[int], list[int]]:
    """(begin, end) pads for auto_pad SAME_UPPER / SAME_LOWER: output = ceil(in / stride)."""
    pb, pe = [], []
    for n, k, s in zip(in_sizes, eff_k, strides):
        out = -(-n // s)
        total = max(0, (out - 1) * s + k - n)
        small = total // 2
        if mode == "SAME_UPPER":
            pb.append(small)
            pe.append(total - small)
        else:
            pb.append(total - small)
            pe.append(small)
    return pb, pe


class Geometry:
    """Attributes common to Conv and the pools, resolved for ``nsp`` spatial dims."""

    def __init__(self, node: Node, nsp: int, kernel: Sequence[int] | None) -> None:
        self.nsp = nsp
        self.auto_pad = attr(node, "auto_pad", "NOTSET") or "NOTSET"
        if self.auto_pad not in ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"):
            raise unsupported(node, f"auto_pad={self.auto_pad!r}")
        self.kernel = list(kernel) if kernel is not None else None
        self.strides = list(attr(node, "strides", None) or [1] * nsp)
        self.dilations = list(attr(node, "dilations", None) or [1] * nsp)
        pads = attr(node, "pads", None) or [0] * (2 * nsp)
        if len(self.strides) != nsp or len(self.dilations) != nsp or len(pads) != 2 * nsp:
            raise unsupported(node, f"strides/dilations/pads do not match {nsp} spatial dims")
        if self.auto_pad == "VALID":
            pads = [0] * (2 * nsp)
        self.pb = [int(p) for p in pads[:nsp]]
        self.pe = [int(p) for p in pads[nsp:]]
        if self.kernel is not None and len(self.kernel) != nsp:
            raise unsupported(node, f"kernel_shape {self.kernel} does not match {nsp} spatial dims")

    @property
    def static(self) -> bool:
        """Pads do not depend on the input's spatial size."""
        return self.auto_pad in ("NOTSET", "VALID")

    def eff_kernel(self, kernel: Sequence[int]) -> list[int]:
        return [(k - 1) * d + 1 for k, d in zip(kernel, self.dilations)]

    def pads_for(self, in_sizes: Sequence[int], kernel: Sequence[int]) -> tuple[list[int], list[int]]:
        if self.static:
            return self.pb, self.pe
        return auto_pads(self.auto_pad, in_sizes, self.eff_kernel(kernel), self.strides)

    def pool_out(self, in_sizes: Sequence[int], kernel: Sequence[int], pb: Sequence[int],
                 pe: Sequence[int], ceil_mode: bool) -> list[int]:
        """ONNX pooling output size (the last window must start inside input or left pad)."""
        out = []
        for n, k, s, b, e in zip(in_sizes, self.eff_kernel(kernel), self.strides, pb, pe):
            span = n + b + e - k
            if ceil_mode and self.static:
                o = -(-span // s) + 1
                if (o - 1) * s >= n + b:
                    o -= 1
            else:
                o = span // s + 1
            out.append(max(o, 0))
        return out


def split_pads(pb: Sequence[int], pe: Sequence[int]) -> tuple[list[int], list[int]]:
    """Symmetric part (for the op's own padding) and the F.pad list for the rest."""
    sym = [min(b, e) for b, e in zip(pb, pe)]
    extra: list[int] = []
    for b, e, s in reversed(list(zip(pb, pe, sym))):
        extra += [b - s, e - s]
    if not any(extra):
        extra = []
    return sym, extra


def fpad_list(pb: Sequence[int], pe: Sequence[int]) -> list[int]:
    """F.pad's argument (last dim first) for begin/end pads of the spatial dims."""
    out: list[int] = []
    for b, e in reversed(list(zip(pb, pe))):
        out += [b, e]
    return out


def shape_cached(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Memoize a plan function of (hashable) shapes; plans hold ints, never tensors."""
    cache: dict[Any, Any] = {}

    def get(*key: Any) -> Any:
        r = cache.get(key)
        if r is None:
            r = cache[key] = fn(*key)
        return r

    return get


# ---------------------------------------------------------------------------------------
# Conv


def _conv(node: Node, ctx: object) -> Kernel:
    return conv_call(node, 1)


def conv_call(node: Node, weight_index: int) -> Callable[..., torch.Tensor]:
    """``f(x, w, b=None)``: ONNX Conv geometry (attrs of ``node``) on torch tensors.

    Everything that does not depend on the input's spatial size is resolved here;
    auto_pad SAME is resolved once per input size.
    """
    nsp = n_spatial(node, weight_index)
    group = int(attr(node, "group", 1))
    ks = attr(node, "kernel_shape")
    conv = torch.convolution

    def plan_for(nsp: int) -> tuple[Geometry, list[int]]:
        g = Geometry(node, nsp, ks)
        return g, [0] * nsp

    if nsp is not None:
        geo, zeros = plan_for(nsp)
        if geo.static:
            sym, extra = split_pads(geo.pb, geo.pe)
            stride, dil = geo.strides, geo.dilations
            if not extra:
                def conv_k(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
                    return conv(x, w, b, stride, sym, dil, False, zeros, group)
                return conv_k

            def conv_pad(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
                return conv(F.pad(x, extra), w, b, stride, sym, dil, False, zeros, group)
            return conv_pad

    @shape_cached
    def plan(xs: tuple[int, ...], wk: tuple[int, ...]) -> tuple[Any, ...]:
        g, z = plan_for(len(wk))
        pb, pe = g.pads_for(xs, wk)
        sym, extra = split_pads(pb, pe)
        return g.strides, sym, g.dilations, z, extra

    def conv_dyn(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        stride, sym, dil, zeros, extra = plan(tuple(x.shape[2:]), tuple(w.shape[2:]))
        if extra:
            x = F.pad(x, extra)
        return conv(x, w, b, stride, sym, dil, False, zeros, group)

    return conv_dyn


# ---------------------------------------------------------------------------------------
# ConvTranspose


def _conv_transpose(node: Node, ctx: object) -> Kernel:
    group = int(attr(node, "group", 1))
    auto_pad = attr(node, "auto_pad", "NOTSET") or "NOTSET"
    if auto_pad not in ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"):
        raise unsupported(node, f"auto_pad={auto_pad!r}")
    ks_attr = attr(node, "kernel_shape")
    pads_attr = attr(node, "pads")
    out_shape_attr = attr(node, "output_shape")
    opad_attr = attr(node, "output_padding")
    conv = torch.convolution

    @shape_cached
    def plan(xs: tuple[int, ...], wk: tuple[int, ...]) -> tuple[Any, ...]:
        nsp = len(xs)
        kernel = list(ks_attr) if ks_attr else list(wk)
        strides = list(attr(node, "strides", None) or [1] * nsp)
        dil = list(attr(node, "dilations", None) or [1] * nsp)
        opad = list(opad_attr or [0] * nsp)[:nsp]
        full = [s * (n - 1) + (k - 1) * d + 1 for n, s, k, d in zip(xs, strides, kernel, dil)]
        want = [f + p for f, p in zip(full, opad)]  # size before removing the pads
        if out_shape_attr or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            # pads are derived from the output size (explicit pads are ignored)
            out = [int(o) for o in out_shape_attr[-nsp:]] if out_shape_attr else [
                n * s for n, s in zip(xs, strides)]
            total = [w - o for w, o in zip(want, out)]
            pb = [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in total]
        else:
            pads = pads_attr if (pads_attr and auto_pad == "NOTSET") else [0] * (2 * nsp)
            pb = [int(p) for p in pads[:nsp]]
            out = [w - b - int(e) for w, b, e in zip(want, pb, pads[nsp:])]
        # torch's own padding works when it is symmetric and output_padding is in range
        torch_op = [o - (f - 2 * b) for o, f, b in zip(out, full, pb)]
        sym = all(b >= 0 for b in pb) and all(
            0 <= p < max(s, d) for p, s, d in zip(torch_op, strides, dil))
        if sym:
            return True, strides, pb, dil, torch_op, None
        crop: list[int] = []
        for b, o, f in reversed(list(zip(pb, out, full))):
            crop += [-b, b + o - f]
        return False, strides, [0] * nsp, dil, [0] * nsp, crop

    def convt(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        fast, stride, pad, dil, opad, crop = plan(tuple(x.shape[2:]), tuple(w.shape[2:]))
        if fast:
            return conv(x, w, b, stride, pad, dil, True, opad, group)
        y = F.pad(conv(x, w, None, stride, pad, dil, True, opad, group), crop)
        if b is not None:
            y = y + b.view(-1, *([1] * (y.dim() - 2)))
        return y

    return convt


# ---------------------------------------------------------------------------------------
# LRN


def _lrn(node: Node, ctx: object) -> Kernel:
    size = int(attr(node, "size"))
    alpha = float(attr(node, "alpha", 1e-4))
    beta = float(attr(node, "beta", 0.75))
    bias = float(attr(node, "bias", 1.0))
    front, back = (size - 1) // 2, math.ceil((size - 1) / 2)

    def lrn(x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[0], x.shape[1]
        sq = (x * x).reshape(n, 1, c, -1)
        sq = F.pad(sq, [0, 0, front, back])
        s = F.avg_pool2d(sq, (size, 1), stride=1)  # mean over the window = sum / size
        div = (s * alpha + bias).pow_(beta).reshape(x.shape)
        return x / div

    return lrn


# ---------------------------------------------------------------------------------------
# DeformConv (2-D): bilinear samples at offset taps (zero outside), then a grouped matmul


def _bilinear_taps(x: torch.Tensor, py: torch.Tensor, px: torch.Tensor) -> torch.Tensor:
    """x (N, G, Cg, H, W) sampled at (py, px) of shape (N, G, L) → (N, G, Cg, L)."""
    n, g, cg, h, w = x.shape
    flat = x.reshape(n, g, cg, h * w)
    y0, x0 = torch.floor(py), torch.floor(px)
    ly, lx = py - y0, px - x0
    out = torch.zeros(n, g, cg, py.shape[-1], dtype=x.dtype)
    for dy, wy in ((0, 1 - ly), (1, ly)):
        for dx, wx in ((0, 1 - lx), (1, lx)):
            yy, xx = y0 + dy, x0 + dx
            ok = (yy >= 0) & (yy <= h - 1) & (xx >= 0) & (xx <= w - 1)
            idx = (yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)).long()
            vals = torch.gather(flat, 3, idx.unsqueeze(2).expand(n, g, cg, idx.shape[-1]))
            out += vals * (wy * wx * ok).unsqueeze(2).to(x.dtype)
    return out


def _deform_conv(node: Node, ctx: object) -> Kernel:
    group = int(attr(node, "group", 1))
    og = int(attr(node, "offset_group", 1))
    sh, sw = attr(node, "strides", None) or [1, 1]
    dh, dw = attr(node, "dilations", None) or [1, 1]
    pads = attr(node, "pads", None) or [0, 0, 0, 0]

    def deform(x: torch.Tensor, w: torch.Tensor, offset: torch.Tensor, b: torch.Tensor | None = None,
               mask: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() != 4:
            raise NotImplementedError("DeformConv is implemented for 2-D inputs only")
        n, c, h, wd = x.shape
        oc, cpg, kh, kw = w.shape
        oh, ow = offset.shape[2], offset.shape[3]
        k = kh * kw
        ty = (torch.arange(kh) * dh).repeat_interleave(kw)  # tap offsets, row-major taps
        tx = (torch.arange(kw) * dw).repeat(kh)
        by = (torch.arange(oh) * sh - pads[0]).view(1, oh, 1) + ty.view(k, 1, 1)
        bx = (torch.arange(ow) * sw - pads[1]).view(1, 1, ow) + tx.view(k, 1, 1)
        off = offset.reshape(n, og, k, 2, oh, ow).to(x.dtype)
        py = (off[:, :, :, 0] + by.to(x.dtype)).reshape(n, og, -1)
        px = (off[:, :, :, 1] + bx.to(x.dtype)).reshape(n, og, -1)
        cols = _bilinear_taps(x.reshape(n, og, c // og, h, wd), py, px)  # (N, G, Cg, K*L)
        if mask is not None:
            cols = cols * mask.reshape(n, og, 1, -1).to(x.dtype)
        cols = cols.reshape(n, group, cpg * k, oh * ow)
        y = torch.matmul(w.reshape(group, oc // group, cpg * k), cols).reshape(n, oc, oh, ow)
        if b is not None:
            y = y + b.view(1, -1, 1, 1)
        return y

    return deform


KERNELS: dict[str, Factory] = {
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "LRN": _lrn,
    "DeformConv": _deform_conv,
}
