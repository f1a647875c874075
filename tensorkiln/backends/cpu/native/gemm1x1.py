"""1x1 convolution as a BLAS GEMM over NHWC pixels, with the residual as the GEMM's C matrix.

For a 1x1, stride-1, unpadded, ungrouped convolution on a channels-last tensor, the input is
already a row-major [pixels, C] matrix. ``y = x W^T`` runs through ``torch.addmm``/``torch.mm``
(MKL); a residual z is passed as the C operand (beta = 1), in place when the in-place residual
pass says z dies here, so it is read and written once, inside the GEMM. Bias and ReLU/Clip
follow in one native pass over the same rows while they are in cache (eltwise.c), in row
chunks of about 2 MiB.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np
import torch

from tensorkiln.backends.cpu import native

ACT_CODES = native.ACT_CODES
CHUNK_BYTES = 2 << 20


_SIGNATURES: native.Signatures = {
    "tk_bias_act_rows": [ctypes.c_void_p, ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_int,
                         ctypes.c_float, ctypes.c_float],
}


def library() -> Any:
    return native.load("eltwise", _SIGNATURES)


def available() -> bool:
    return library() is not None


class Gemm1x1:
    def __init__(self, w: np.ndarray, bias: np.ndarray | None, act: str, act_params: list[float],
                 inplace: bool, chunk_bytes: int = CHUNK_BYTES) -> None:
        lib = library()
        if lib is None:
            raise RuntimeError(native.why_unavailable("eltwise"))
        self.lib = lib
        self.k, self.c = int(w.shape[0]), int(w.shape[1])
        self.wt = torch.from_numpy(np.ascontiguousarray(w.reshape(self.k, self.c).T, dtype=np.float32))
        b = bias if bias is not None else np.zeros(self.k, np.float32)
        self.bias = torch.from_numpy(np.ascontiguousarray(b, dtype=np.float32))
        self.act = ACT_CODES[act]
        self.lo, self.hi = (float(act_params[0]), float(act_params[1])) if act == "Clip" else (0.0, 0.0)
        self.inplace = inplace
        self.rows = max(16, chunk_bytes // (4 * self.k))

    def __call__(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        cl = torch.channels_last
        x = x.contiguous(memory_format=cl)
        n, c, h, w = x.shape
        m, k = n * h * w, self.k
        x2 = x.permute(0, 2, 3, 1).reshape(m, c)  # a view: channels-last is row-major [pixels, C]
        if z is not None and self.inplace and z.is_contiguous(memory_format=cl):
            y = z  # z dies here (checked by the in-place residual pass)
        elif z is not None:
            y = z.contiguous(memory_format=cl).clone(memory_format=cl)
        else:
            y = torch.empty((n, k, h, w), memory_format=cl)
        y2 = y.permute(0, 2, 3, 1).reshape(m, k)
        lib, bp, rows = self.lib, self.bias.data_ptr(), self.rows
        for r0 in range(0, m, rows):
            r1 = min(m, r0 + rows)
            xs, ys = (x2, y2) if (r0 == 0 and r1 == m) else (x2[r0:r1], y2[r0:r1])
            if z is None:
                torch.mm(xs, self.wt, out=ys)
            else:
                torch.addmm(ys, xs, self.wt, out=ys)
            lib.tk_bias_act_rows(ys.data_ptr(), r1 - r0, k, bp, self.act, self.lo, self.hi)
        return y
