"""Fully connected layers at batch 1..4 as bandwidth-bound matrix-vector products (gemv.c)."""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np
import torch

from tensorkiln.backends.cpu import native
from tensorkiln.backends.cpu.native import chain as native_chain
from tensorkiln.backends.cpu.native.chain import NativeCall

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
        self._w, self._bias = self.w.data_ptr(), self.bias.data_ptr() if self.bias is not None else None

    def rows(self, x: torch.Tensor) -> int:
        return x.numel() // self.k if x.dim() >= 1 and x.shape[-1] == self.k else -1

    def plan(self, x: torch.Tensor) -> NativeCall | None:
        """The kernel call for ``x`` (contiguous float32, 1..MAX_ROWS rows), output allocated; else None."""
        r = self.rows(x)
        if x.dtype != torch.float32 or not x.is_contiguous() or not 0 < r <= MAX_ROWS:
            return None
        y = torch.empty((*x.shape[:-1], self.m))
        return NativeCall(y, self.lib.tk_gemv, [self._w, x, self._bias, y, r, self.m, self.k, self.act, self.lo,
                                                 self.hi])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        call = self.plan(x) or self.plan(x.float().contiguous())
        if call is None:
            raise ValueError(f"expected 1..{MAX_ROWS} rows of {self.k} values, got {tuple(x.shape)}")
        return native_chain.run(call)
