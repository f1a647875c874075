"""Fully connected layers at batch 1..4 as bandwidth-bound matrix-vector products (gemv.c)."""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np
import torch

from tensorkiln.backends.cpu import native

MAX_ROWS = 4  # rows of x the kernel takes; more go to BLAS
_p, _i, _f = ctypes.c_void_p, ctypes.c_int, ctypes.c_float
_SIGNATURES: native.Signatures = {"tk_gemv": [_p, _p, _p, _p, _i, _i, _i, _i, _f, _f]}


def library() -> Any:
    return native.load("gemv", _SIGNATURES)


def available() -> bool:
    return library() is not None


class Gemv:
    """``act(x @ w.T + bias)`` for x with at most ``MAX_ROWS`` rows (over its last axis)."""

    def __init__(self, w: np.ndarray, bias: np.ndarray | None, act: str, act_params: list[float]) -> None:
        lib = library()
        if lib is None:
            raise RuntimeError(native.why_unavailable("gemv"))
        self.lib = lib
        self.m, self.k = int(w.shape[0]), int(w.shape[1])
        self.w = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))
        self.bias = torch.from_numpy(np.ascontiguousarray(bias, dtype=np.float32)) if bias is not None else None
        self.act = native.ACT_CODES[act]
        self.lo, self.hi = (float(act_params[0]), float(act_params[1])) if act == "Clip" else (0.0, 0.0)

    def rows(self, x: torch.Tensor) -> int:
        return x.numel() // self.k if x.dim() >= 1 and x.shape[-1] == self.k else -1

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        r = self.rows(x)
        y = torch.empty((*x.shape[:-1], self.m))
        self.lib.tk_gemv(self.w.data_ptr(), x.data_ptr(), self.bias.data_ptr() if self.bias is not None else None,
                         y.data_ptr(), r, self.m, self.k, self.act, self.lo, self.hi)
        return y
