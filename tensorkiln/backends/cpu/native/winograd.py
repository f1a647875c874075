"""Winograd F(4x4, 3x3) convolution: C transforms (winograd.c) around a batched GEMM.

For a 3x3, stride-1, dilation-1, ungrouped convolution on NHWC float32 input. The weights are
transformed once (U = G g G^T, 36 matrices C x K); per call the input tiles are transformed
into V [36, tiles, C], multiplied (``torch.bmm``, i.e. the BLAS), and transformed back into the
NHWC output with bias, an optional residual and ReLU/Clip applied on the way out. Tiles are
processed in chunks so the intermediate V and M stay in cache.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np
import torch

from tensorkiln.backends.cpu import native

_G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
               [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], dtype=np.float64)

ACT_CODES = native.ACT_CODES
CHUNK_BYTES = 4 << 20  # tiles per chunk: V (or M) of one chunk takes about this many bytes

_c_int, _c_long, _c_float, _p = ctypes.c_int, ctypes.c_long, ctypes.c_float, ctypes.c_void_p


_SIGNATURES: native.Signatures = {
    "tk_wino43_input": [_p, _c_int, _c_int, _c_int, _c_int, _c_int, _c_int, _c_int, _c_int, _c_long, _c_long, _p],
    "tk_wino43_output": [_p, _c_int, _c_int, _c_int, _c_int, _c_int, _c_int, _c_long, _c_long, _p, _p, _c_int,
                         _c_float, _c_float, _p],
}


def library() -> Any:
    return native.load("winograd", _SIGNATURES)


def available() -> bool:
    return library() is not None


def transform_weight(w: np.ndarray) -> torch.Tensor:
    """[K, C, 3, 3] → U [36, C, K] (float64 arithmetic, stored as float32)."""
    u = np.einsum("ij,kcjl,ml->imck", _G, w.astype(np.float64), _G)  # [6, 6, C, K]
    k, c = w.shape[:2]
    return torch.from_numpy(np.ascontiguousarray(u.reshape(36, c, k), dtype=np.float32))


class Wino43:
    """A prepared convolution; call with an NHWC (channels_last) float32 tensor."""

    def __init__(self, w: np.ndarray, bias: np.ndarray | None, pads: list[int], act: str,
                 act_params: list[float], chunk_bytes: int = CHUNK_BYTES) -> None:
        lib = library()
        if lib is None:
            raise RuntimeError(native.why_unavailable("winograd"))
        self.lib = lib
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
        ho, wo = h + self.pt + self.pb - 2, w + self.pl + self.pr - 2
        th, tw = (ho + 3) // 4, (wo + 3) // 4
        tiles = n * th * tw
        k = self.k
        y = torch.empty((n, k, ho, wo), memory_format=cl)
        zp = None
        if z is not None:
            z = z.contiguous(memory_format=cl)
            zp = z.data_ptr()
        chunk = min(tiles, self.chunk_tiles)
        v = torch.empty((36, chunk, c))
        m = torch.empty((36, chunk, k))
        bp = self.bias.data_ptr() if self.bias is not None else None
        lib = self.lib
        for t0 in range(0, tiles, chunk):
            nt = min(chunk, tiles - t0)
            if nt < chunk:  # the last, partial chunk: V and M must be contiguous [36, nt, ·]
                v, m = torch.empty((36, nt, c)), torch.empty((36, nt, k))
            lib.tk_wino43_input(x.data_ptr(), n, h, w, c, self.pt, self.pl, th, tw, t0, nt, v.data_ptr())
            torch.bmm(v, self.u, out=m)
            lib.tk_wino43_output(m.data_ptr(), n, ho, wo, k, th, tw, t0, nt, bp, zp, self.act, self.lo,
                                 self.hi, y.data_ptr())
        return y
