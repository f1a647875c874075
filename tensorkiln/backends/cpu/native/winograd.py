"""Winograd convolution, F(4x4, 3x3) and F(2x2, 5x5), in one native call (winograd.c).

For a 3x3 or 5x5, stride-1, dilation-1, ungrouped convolution on NHWC float32 input. The
weights are transformed once (U = G g G^T, 36 matrices C x K, packed for the register tiles);
per call each thread transforms groups of its tiles into V, multiplies them by U and transforms
the products back into the NHWC output with bias, an optional residual and ReLU/Clip applied on
the way out; a group's V and M stay in L2. The call has a ``plan`` (it runs inside chains).
Both variants use the points 0, ±1, ±2, ∞: G's rows are (1, p, p², …) / Π(p − q) over the other
finite points q, plus (0, …, 0, 1) for ∞.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

import numpy as np
import torch

from tensorkiln.backends.cpu import native
from tensorkiln.backends.cpu.native import chain as native_chain
from tensorkiln.backends.cpu.native.chain import NativeCall
from tensorkiln.backends.cpu.native.directconv import _has_avx2, _pixel_stride
from tensorkiln.errors import InternalError

_POINTS = (0.0, 1.0, -1.0, 2.0, -2.0)

ACT_CODES = native.ACT_CODES
GROUP_BYTES = 192 << 10  # a thread's V and M for one group of tiles: stay in L2 with the weights passing by
# the threads split the output channels instead of the tiles (winograd.c) where the tiles are few and
# U is large: measured on 3x3 layers at batch 1 (alone, caches warm / cold): 256 ch at 14x14 (16 tiles,
# U 9.4 MB) 0.82/1.32 ms vs 1.10/1.58 in groups of tiles; 128->256 (4.7 MB) 0.44/0.64 vs 0.50/0.75;
# but 112->224 (3.6 MB) 0.44/0.57 vs 0.36/0.46 and 128 ch at 28x28 (49 tiles) 0.58/0.70 vs 0.50/0.60
KSPLIT_TILES = 64
KSPLIT_U_BYTES = 4 << 20
KERNELS = {3: 4, 5: 2}  # kernel size r → output tile m (F(m x m, r x r), tile 6 = m + r - 1)
OB = 16  # output channels per register tile
CL = torch.channels_last

_i, _f, _p = ctypes.c_int, ctypes.c_float, ctypes.c_void_p
_SIGNATURES: native.Signatures = {"tk_wino_nhwc": [_p, _p, _p, _p, _p, _p, _p, _i, _f, _f]}


def library() -> Any:
    return native.load("winograd", _SIGNATURES)


def available() -> bool:
    return library() is not None and _has_avx2()


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


def pack_u(u: torch.Tensor, ob: int = OB) -> torch.Tensor:
    """U [36, C, K] → [36][Kp/ob][C][ob] (K padded with zero filters), 32-byte aligned."""
    n, c, k = u.shape
    kp = (k + ob - 1) // ob * ob
    pad = torch.zeros(n, c, kp)
    pad[:, :, :k] = u
    packed = pad.reshape(n, c, kp // ob, ob).permute(0, 2, 1, 3).reshape(-1)
    t = torch.empty(packed.numel() + 8)
    off = (-t.data_ptr() // 4) % 8
    out = t[off:off + packed.numel()]
    out.copy_(packed)
    return out


class Winograd:
    """A prepared 3x3 or 5x5 convolution; call with an NHWC (channels_last) float32 tensor."""

    def __init__(self, w: np.ndarray, bias: np.ndarray | None, pads: list[int], act: str,
                 act_params: list[float], group_bytes: int = GROUP_BYTES, ksplit_tiles: int = KSPLIT_TILES,
                 ksplit_u_bytes: int = KSPLIT_U_BYTES) -> None:
        lib = library()
        if lib is None:
            raise RuntimeError(native.why_unavailable("winograd"))
        if not _has_avx2():
            raise RuntimeError("the Winograd kernels need a CPU with AVX2 and FMA")
        self.r = int(w.shape[2])
        if self.r not in KERNELS or w.shape[3] != self.r:
            raise ValueError(f"Winograd here takes 3x3 or 5x5 kernels, not {tuple(w.shape[2:])}")
        self.m = KERNELS[self.r]
        self.lib = lib
        self.k, self.c = int(w.shape[0]), int(w.shape[1])
        kp = (self.k + OB - 1) // OB * OB
        self.up = pack_u(transform_weight(w))
        b = np.zeros(kp, np.float32)
        if bias is not None:
            b[:self.k] = np.asarray(bias, np.float32).reshape(-1)
        self.bias = torch.from_numpy(b)
        self.pt, self.pl, self.pb, self.pr = (int(p) for p in pads)
        self.act = ACT_CODES[act]
        self.lo, self.hi = (float(act_params[0]), float(act_params[1])) if act == "Clip" else (0.0, 0.0)
        # tiles per group: a multiple of the register tile's 6 where it fits
        per_tile = 36 * 4 * (self.c + kp)
        g = max(1, group_bytes // per_tile)
        self.group = g // 6 * 6 if g >= 6 else g
        # the work buffer holds a group per thread: sized for every core (a context may run with more
        # threads than the one that built the engine; the kernel never uses more than it was sized for)
        self.threads = max(1, int(lib.tk_wino_threads()), min(64, os.cpu_count() or 1))
        self.ksplit_tiles, self.ksplit_u_bytes = ksplit_tiles, ksplit_u_bytes
        self._layouts: dict[tuple[Any, ...], tuple[torch.Tensor, int, tuple[int, ...], tuple[int, ...]]] = {}

    def _layout(self, x: torch.Tensor, cs: int) -> tuple[torch.Tensor, int, tuple[int, ...], tuple[int, ...]]:
        """Per input layout: the geometry, the work buffer's size (floats), the output shape and strides."""
        n, c, h, w = (int(d) for d in x.shape)
        if c != self.c:
            raise ValueError(f"expected {self.c} input channels, got {c}")
        m, k = self.m, self.k
        ho, wo = h + self.pt + self.pb - self.r + 1, w + self.pl + self.pr - self.r + 1
        if ho < 1 or wo < 1:
            raise ValueError(f"a {self.r}x{self.r} convolution of a {h}x{w} input has no output")
        th, tw = (ho + m - 1) // m, (wo + m - 1) // m
        kp, tiles = self.bias.numel(), n * th * tw
        ksplit = tiles <= self.ksplit_tiles and self.up.numel() * 4 >= self.ksplit_u_bytes
        g = torch.tensor([n, h, w, c, cs, k, self.pt, self.pl, ho, wo, th, tw, m, self.group, self.threads,
                          int(ksplit)], dtype=torch.int32)
        size = 36 * tiles * (c + kp) if ksplit else self.threads * 36 * self.group * (c + kp)
        return g, size, (n, k, ho, wo), (ho * wo * k, 1, wo * k, k)

    def plan(self, x: torch.Tensor, z: torch.Tensor | None = None) -> NativeCall | None:
        """The call for these inputs (output allocated); None where an input must be copied first."""
        if x.dim() != 4:
            raise ValueError(f"expected a 4-D input, got {x.dim()}-D")
        cs = _pixel_stride(x)
        if cs == 0:
            return None
        key = (tuple(x.shape), x.stride())
        got = self._layouts.get(key)
        if got is None:
            got = self._layout(x, cs)
            # kept (setdefault: a concurrent first call gets the same one): g's address goes into the
            # call and into chain plans, which outlive this call
            got = self._layouts.setdefault(key, got)
        g, size, shape, strides = got
        if z is not None:
            if tuple(z.shape) != shape:
                raise ValueError(f"residual of shape {tuple(z.shape)} for an output of shape {shape}")
            if z.dtype != torch.float32 or not z.is_contiguous(memory_format=CL):
                return None
        y = torch.empty_strided(shape, strides)
        work = torch.empty(size)
        # constants as addresses (kept alive by self): a chain maps every tensor argument to a buffer
        return NativeCall(y, self.lib.tk_wino_nhwc, [x, self.up.data_ptr(), self.bias.data_ptr(), z, y, work,
                                                     g.data_ptr(), self.act, self.lo, self.hi], (work,))

    def __call__(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        call = self.plan(x, z)
        if call is None:  # channels-last float32 copies
            call = self.plan(x.float().contiguous(memory_format=CL),
                             None if z is None else z.float().contiguous(memory_format=CL))
            if call is None:
                raise InternalError("Winograd cannot run on channels-last float32 copies")
        return native_chain.run(call)
