"""Winograd convolution, F(4x4, 3x3) and F(2x2, 5x5): C transforms (winograd.c) around a BLAS
batched GEMM.

For a 3x3 or 5x5, stride-1, dilation-1, ungrouped convolution on NHWC float32 input. The
weights are transformed once (U = G g G^T, 36 matrices C x K); per call the 6x6 input tiles
(step 4 for 3x3, 2 for 5x5) are transformed into V [36, tiles, C], multiplied (``torch.bmm``),
and transformed back into the NHWC output with bias, an optional residual and ReLU/Clip
applied on the way out. Tiles are processed in chunks so the intermediate V and M stay in
cache. Both variants use the points 0, ±1, ±2, ∞: G's rows are (1, p, p², …) / Π(p − q) over
the other finite points q, plus (0, …, 0, 1) for ∞.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np
import torch

from tensorkiln.backends.cpu import native

_POINTS = (0.0, 1.0, -1.0, 2.0, -2.0)

ACT_CODES = native.ACT_CODES
CHUNK_BYTES = 4 << 20  # tiles per chunk: V (or M) of one chunk takes about this many bytes
KERNELS = {3: 4, 5: 2}  # kernel size r → output tile m (F(m x m, r x r), tile 6 = m + r - 1)

_i, _l, _f, _p = ctypes.c_int, ctypes.c_long, ctypes.c_float, ctypes.c_void_p
_OUT = [_p, _i, _i, _i, _i, _i, _i, _l, _l, _p, _p, _i, _f, _f, _p]
_SIGNATURES: native.Signatures = {
    "tk_wino_input": [_p, _i, _i, _i, _i, _i, _i, _i, _i, _i, _l, _l, _p],
    "tk_wino43_output": _OUT,
    "tk_wino25_output": _OUT,
}


def library() -> Any:
    return native.load("winograd", _SIGNATURES)


def available() -> bool:
    return library() is not None


def g_matrix(r: int) -> np.ndarray:
    """The 6 x r weight-transform matrix for F(6 - r + 1, r) on the points 0, ±1, ±2, ∞."""
    rows = []
    for p in _POINTS:
        norm = np.prod([p - q for q in _POINTS if q != p])
        rows.append([p ** k / norm for k in range(r)])
    rows.append([0.0] * (r - 1) + [1.0])
    return np.array(rows, dtype=np.float64)


def transform_weight(w: np.ndarray) -> torch.Tensor:
    """[K, C, r, r] → U [36, C, K] (float64 arithmetic, stored as float32)."""
    g = g_matrix(int(w.shape[2]))
    u = np.einsum("ij,kcjl,ml->imck", g, w.astype(np.float64), g)  # [6, 6, C, K]
    k, c = w.shape[:2]
    return torch.from_numpy(np.ascontiguousarray(u.reshape(36, c, k), dtype=np.float32))


class Winograd:
    """A prepared 3x3 or 5x5 convolution; call with an NHWC (channels_last) float32 tensor."""

    def __init__(self, w: np.ndarray, bias: np.ndarray | None, pads: list[int], act: str,
                 act_params: list[float], chunk_bytes: int = CHUNK_BYTES) -> None:
        lib = library()
        if lib is None:
            raise RuntimeError(native.why_unavailable("winograd"))
        self.r = int(w.shape[2])
        if self.r not in KERNELS or w.shape[3] != self.r:
            raise ValueError(f"Winograd here takes 3x3 or 5x5 kernels, not {tuple(w.shape[2:])}")
        self.m = KERNELS[self.r]
        self.lib = lib
        self.output = lib.tk_wino43_output if self.r == 3 else lib.tk_wino25_output
        self.k, self.c = int(w.shape[0]), int(w.shape[1])
        self.u = transform_weight(w)
        self.bias = torch.from_numpy(np.ascontiguousarray(bias, dtype=np.float32)) if bias is not None else None
        self.pt, self.pl, self.pb, self.pr = pads
        self.act = ACT_CODES[act]
        self.lo, self.hi = (float(act_params[0]), float(act_params[1])) if act == "Clip" else (0.0, 0.0)
        self.chunk_tiles = max(8, chunk_bytes // (36 * 4 * max(self.c, self.k)))

    def __call__(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        cl = torch.channels_last
        x = x.contiguous(memory_format=cl)
        n, c, h, w = x.shape
        m = self.m
        ho, wo = h + self.pt + self.pb - self.r + 1, w + self.pl + self.pr - self.r + 1
        th, tw = (ho + m - 1) // m, (wo + m - 1) // m
        tiles = n * th * tw
        k = self.k
        y = torch.empty((n, k, ho, wo), memory_format=cl)
        zp = None
        if z is not None:
            z = z.contiguous(memory_format=cl)
            zp = z.data_ptr()
        chunk = min(tiles, self.chunk_tiles)
        v = torch.empty((36, chunk, c))
        mm = torch.empty((36, chunk, k))
        bp = self.bias.data_ptr() if self.bias is not None else None
        lib = self.lib
        for t0 in range(0, tiles, chunk):
            nt = min(chunk, tiles - t0)
            if nt < chunk:  # the last, partial chunk: V and M must be contiguous [36, nt, ·]
                v, mm = torch.empty((36, nt, c)), torch.empty((36, nt, k))
            lib.tk_wino_input(x.data_ptr(), n, h, w, c, self.pt, self.pl, m, th, tw, t0, nt, v.data_ptr())
            torch.bmm(v, self.u, out=mm)
            self.output(mm.data_ptr(), n, ho, wo, k, th, tw, t0, nt, bp, zp, self.act, self.lo, self.hi,
                        y.data_ptr())
        return y
