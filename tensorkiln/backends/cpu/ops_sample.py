"""CPU kernels: sampling operators (GridSample, AffineGrid, Col2Im, RoiAlign, MaxRoiPool)."""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
import torch.nn.functional as F

from tensorkiln.backends.cpu.base import Factory, Kernel, attr, const_input, unsupported
from tensorkiln.backends.cpu.ops_tensor import to_ints
from tensorkiln.ir import Node

# ---------------------------------------------------------------------------- GridSample

_GS_MODES = {"bilinear": "linear", "linear": "linear", "nearest": "nearest", "bicubic": "cubic", "cubic": "cubic"}


def _reflect(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    rng = hi - lo
    if rng <= 0:
        return torch.full_like(x, lo)
    d_lo = lo - x
    n_lo = torch.trunc(d_lo / rng)
    r_lo = d_lo - n_lo * rng
    below = torch.where(torch.remainder(n_lo, 2) == 0, lo + r_lo, hi - r_lo)
    d_hi = x - hi
    n_hi = torch.trunc(d_hi / rng)
    r_hi = d_hi - n_hi * rng
    above = torch.where(torch.remainder(n_hi, 2) == 0, hi - r_hi, lo + r_hi)
    return torch.where(x < lo, below, torch.where(x > hi, above, x))


def _cubic_w(t: torch.Tensor) -> list[torch.Tensor]:
    a = -0.75
    return [
        ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a,
        ((a + 2) * t - (a + 3)) * t * t + 1,
        ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1,
        ((a * (2 - t) - 5 * a) * (2 - t) + 8 * a) * (2 - t) - 4 * a,
    ]


def grid_sample_nd(x: torch.Tensor, grid: torch.Tensor, mode: str, padding: str, align: bool) -> torch.Tensor:
    """GridSample for any number of spatial dims, following the ONNX reference."""
    n, c = x.shape[:2]
    dims = list(x.shape[2:])
    r = len(dims)
    out_sp = grid.shape[1:-1]
    g = grid.reshape(n, -1, r).to(torch.float64)
    taps: list[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = []
    for i, length in enumerate(dims):
        gi = g[..., r - 1 - i]
        xi = (gi + 1) / 2 * (length - 1) if align else ((gi + 1) * length - 1) / 2
        lo, hi = (0.0, length - 1.0) if align else (-0.5, length - 0.5)
        if mode == "nearest":
            xi = torch.round(xi)
        if padding == "border":
            xi = torch.where((xi < lo) | (xi > hi), xi.clamp(0, length - 1), xi)
        elif padding == "reflection":
            xi = _reflect(xi, lo, hi)
        if mode == "nearest":
            pts = [(torch.trunc(xi), torch.ones_like(xi))]
        else:
            x0 = torch.floor(xi)
            t = xi - x0
            if mode == "linear":
                pts = [(x0, 1 - t), (x0 + 1, t)]
            else:
                pts = [(x0 + (j - 1), w) for j, w in enumerate(_cubic_w(t))]
        dim_taps = []
        for p, w in pts:
            if padding == "zeros":
                valid = (p >= 0) & (p <= length - 1)
            else:
                valid = torch.ones_like(p, dtype=torch.bool)
                if padding == "border":
                    p = p.clamp(0, length - 1)
                else:
                    p = torch.trunc(_reflect(p, lo, hi)).clamp(0, length - 1)
            dim_taps.append((p.clamp(0, length - 1).to(torch.int64), w, valid))
        taps.append(dim_taps)
    strides = [math.prod(dims[i + 1 :]) for i in range(r)]
    xf = x.reshape(n, c, -1)
    cdt = x.dtype if x.dtype == torch.float64 else torch.float32
    out = torch.zeros(n, c, g.shape[1], dtype=cdt)
    for combo in itertools.product(*taps):
        lin = sum(p * s for (p, _, _), s in zip(combo, strides))
        w = torch.ones_like(g[..., 0])
        valid = torch.ones_like(w, dtype=torch.bool)
        for _, wi, vi in combo:
            w = w * wi
            valid = valid & vi
        w = torch.where(valid, w, 0.0).to(cdt)
        vals = torch.gather(xf, 2, lin.unsqueeze(1).expand(n, c, -1)).to(cdt)  # type: ignore[union-attr]
        out += vals * w.unsqueeze(1)
    return out.reshape(n, c, *out_sp).to(x.dtype)


def _grid_sample(node: Node, ctx: Any) -> Kernel:
    mode = _GS_MODES.get(str(attr(node, "mode", "linear" if node.opset >= 20 else "bilinear")))
    padding = str(attr(node, "padding_mode", "zeros"))
    align = bool(attr(node, "align_corners", 0))
    if mode is None or padding not in ("zeros", "border", "reflection"):
        raise unsupported(node, f"mode {attr(node, 'mode')!r}, padding_mode {padding!r}")
    torch_mode = {"linear": "bilinear", "nearest": "nearest", "cubic": "bicubic"}[mode]

    def k(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        r = x.dim() - 2
        fast = x.dtype in (torch.float32, torch.float64) and (
            (r == 2 and (mode != "cubic" or padding == "zeros")) or (r == 3 and mode != "cubic")
        )
        if fast:
            return F.grid_sample(x, grid.to(x.dtype), mode=torch_mode, padding_mode=padding, align_corners=align)
        return grid_sample_nd(x, grid, mode, padding, align)

    return k


# ---------------------------------------------------------------------------- AffineGrid


def _affine_grid(node: Node, ctx: Any) -> Kernel:
    align = bool(attr(node, "align_corners", 0))

    def k(theta: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
        sz = to_ints(size)
        th = theta if theta.dtype in (torch.float32, torch.float64) else theta.float()
        return F.affine_grid(th, sz, align_corners=align).to(theta.dtype)

    return k


# ---------------------------------------------------------------------------- Col2Im


def _col2im(node: Node, ctx: Any) -> Kernel:
    dil_a = attr(node, "dilations")
    pads_a = attr(node, "pads")
    str_a = attr(node, "strides")
    img_c = const_input(node, 1)
    blk_c = const_input(node, 2)

    def k(x: torch.Tensor, image: torch.Tensor, block: torch.Tensor) -> torch.Tensor:
        img = [int(v) for v in (img_c.reshape(-1) if img_c is not None else to_ints(image))]
        blk = [int(v) for v in (blk_c.reshape(-1) if blk_c is not None else to_ints(block))]
        r = len(img)
        dil = [int(v) for v in dil_a] if dil_a is not None else [1] * r
        pads = [int(v) for v in pads_a] if pads_a is not None else [0] * (2 * r)
        st = [int(v) for v in str_a] if str_a is not None else [1] * r
        n, ck, length = x.shape
        kk = math.prod(blk)
        c = ck // kk
        if r == 2 and pads[0] == pads[2] and pads[1] == pads[3] and x.dtype.is_floating_point:
            return F.fold(x, img, blk, dilation=dil, padding=pads[:2], stride=st)
        padded = [img[i] + pads[i] + pads[r + i] for i in range(r)]
        cols = [(padded[i] - (dil[i] * (blk[i] - 1) + 1)) // st[i] + 1 for i in range(r)]
        if math.prod(cols) != length:
            raise ValueError(f"Col2Im: input has {length} blocks, the shapes give {math.prod(cols)}")
        pstrides = [math.prod(padded[i + 1 :]) for i in range(r)]
        lin = torch.zeros(kk, length, dtype=torch.int64)
        koff = torch.cartesian_prod(*[torch.arange(b) for b in blk]).reshape(kk, r)
        coff = torch.cartesian_prod(*[torch.arange(cn) for cn in cols]).reshape(length, r)
        for i in range(r):
            pos = coff[:, i].unsqueeze(0) * st[i] + koff[:, i].unsqueeze(1) * dil[i]
            lin += pos * pstrides[i]
        out = torch.zeros(n, c, math.prod(padded), dtype=x.dtype)
        out.index_add_(2, lin.reshape(-1), x.reshape(n, c, kk * length))
        out = out.reshape(n, c, *padded)
        sl = tuple(slice(pads[i], pads[i] + img[i]) for i in range(r))
        return out[(slice(None), slice(None), *sl)]

    return k


# ---------------------------------------------------------------------------- RoiAlign / MaxRoiPool


def _bilinear_taps(
    start: torch.Tensor, bin_size: torch.Tensor, grid: torch.Tensor, n_out: int, n_grid: int, size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample rows (or columns) of RoiAlign: indices (R, out, G, 2), weights, sample exists (R, out, G)."""
    p = torch.arange(n_out, dtype=torch.float64).reshape(1, -1, 1)
    i = torch.arange(n_grid, dtype=torch.float64).reshape(1, 1, -1)
    st, bs, gr = start.reshape(-1, 1, 1), bin_size.reshape(-1, 1, 1), grid.reshape(-1, 1, 1)
    pos = st + p * bs + (i + 0.5) * bs / gr.clamp(min=1)
    exists = (i < gr).expand(-1, n_out, -1)
    valid = ~((pos < -1.0) | (pos > size))
    pos = pos.clamp(min=0)
    low = torch.floor(pos).to(torch.int64)
    edge = low >= size - 1
    low = torch.where(edge, size - 1, low)
    high = torch.where(edge, size - 1, low + 1)
    pos = torch.where(edge, low.to(torch.float64), pos)
    frac = pos - low
    w = torch.stack([1 - frac, frac], -1) * (valid & exists).unsqueeze(-1)
    return torch.stack([low, high], -1), w, exists


def _roi_align(node: Node, ctx: Any) -> Kernel:
    mode = str(attr(node, "mode", "avg"))
    if mode not in ("avg", "max"):
        raise unsupported(node, f"mode {mode!r}")
    oh, ow = int(attr(node, "output_height", 1)), int(attr(node, "output_width", 1))
    ratio = int(attr(node, "sampling_ratio", 0))
    scale = float(attr(node, "spatial_scale", 1.0))
    ctm = str(attr(node, "coordinate_transformation_mode", "half_pixel" if node.opset >= 16 else "output_half_pixel"))
    if ctm not in ("half_pixel", "output_half_pixel"):
        raise unsupported(node, f"coordinate_transformation_mode {ctm!r}")
    half = ctm == "half_pixel"

    def k(x: torch.Tensor, rois: torch.Tensor, bidx: torch.Tensor) -> torch.Tensor:
        _, c, h, w = x.shape
        n_r = rois.shape[0]
        if n_r == 0:
            return torch.zeros(0, c, oh, ow, dtype=x.dtype)
        ro = rois.to(torch.float64) * scale - (0.5 if half else 0.0)
        rw, rh = ro[:, 2] - ro[:, 0], ro[:, 3] - ro[:, 1]
        if not half:
            rw, rh = rw.clamp(min=1.0), rh.clamp(min=1.0)
        bh, bw = rh / oh, rw / ow
        if ratio > 0:
            gh = torch.full((n_r,), float(ratio), dtype=torch.float64)
            gw = gh
        else:
            gh, gw = torch.ceil(rh / oh), torch.ceil(rw / ow)
        count = (gh * gw).clamp(min=1)
        g_h, g_w = max(int(gh.max().item()), 1), max(int(gw.max().item()), 1)
        rows, wy, ey = _bilinear_taps(ro[:, 1], bh, gh, oh, g_h, h)
        cols, wx, ex = _bilinear_taps(ro[:, 0], bw, gw, ow, g_w, w)
        xt = x.permute(0, 2, 3, 1)  # N, H, W, C
        b = bidx.to(torch.int64)
        cdt = x.dtype if x.dtype == torch.float64 else torch.float32
        per_roi = oh * g_h * 2 * ow * g_w * 2 * c
        chunk = max(1, (1 << 24) // max(per_roi, 1))
        outs = []
        for s in range(0, n_r, chunk):
            e = min(s + chunk, n_r)
            ri = rows[s:e].reshape(e - s, -1, 1)
            ci = cols[s:e].reshape(e - s, 1, -1)
            v = xt[b[s:e].reshape(-1, 1, 1), ri, ci].to(cdt)  # (r, Ry, Rx, C)
            v = v.reshape(e - s, oh, g_h, 2, ow, g_w, 2, c)
            wyy = wy[s:e].to(cdt).reshape(e - s, oh, g_h, 2, 1, 1, 1, 1)
            wxx = wx[s:e].to(cdt).reshape(e - s, 1, 1, 1, ow, g_w, 2, 1)
            t = v * wyy * wxx
            if mode == "avg":
                o = t.sum(dim=(2, 3, 5, 6)) / count[s:e].to(cdt).reshape(-1, 1, 1, 1)
            else:
                m = t.amax(dim=(3, 6))  # (r, oh, g_h, ow, g_w, C)
                ok = ey[s:e].reshape(e - s, oh, g_h, 1, 1, 1) & ex[s:e].reshape(e - s, 1, 1, ow, g_w, 1)
                m = torch.where(ok, m, -math.inf).amax(dim=(2, 4))
                o = torch.where(torch.isneginf(m), 0.0, m)
            outs.append(o.permute(0, 3, 1, 2))
        return torch.cat(outs).to(x.dtype)

    return k


def _max_roi_pool(node: Node, ctx: Any) -> Kernel:
    ph, pw = (int(v) for v in attr(node, "pooled_shape"))
    scale = float(attr(node, "spatial_scale", 1.0))

    def rnd(v: float) -> int:
        return math.floor(v + 0.5) if v >= 0 else -math.floor(-v + 0.5)

    def bins(start: int, length: int, n: int, size: int) -> list[tuple[int, int]]:
        bs = length / n
        out = []
        for p in range(n):
            lo = min(max(math.floor(p * bs) + start, 0), size)
            hi = min(max(math.ceil((p + 1) * bs) + start, 0), size)
            out.append((lo, hi))
        return out

    def k(x: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        _, c, h, w = x.shape
        out = torch.zeros(rois.shape[0], c, ph, pw, dtype=x.dtype)
        for i, (b, x1, y1, x2, y2) in enumerate(rois.tolist()):
            sw, sh, ew, eh = rnd(x1 * scale), rnd(y1 * scale), rnd(x2 * scale), rnd(y2 * scale)
            hb = bins(sh, max(eh - sh + 1, 1), ph, h)
            wb = bins(sw, max(ew - sw + 1, 1), pw, w)
            xb = x[int(b)]
            for p, (h0, h1) in enumerate(hb):
                if h1 <= h0:
                    continue
                rowmax = xb[:, h0:h1].amax(dim=1)  # (C, W)
                for q, (w0, w1) in enumerate(wb):
                    if w1 > w0:
                        out[i, :, p, q] = rowmax[:, w0:w1].amax(dim=1)
        return out

    return k


KERNELS: dict[str, Factory] = {
    "RoiAlign": _roi_align,
    "MaxRoiPool": _max_roi_pool,
    "GridSample": _grid_sample,
    "AffineGrid": _affine_grid,
    "Col2Im": _col2im,
}
