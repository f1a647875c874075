"""uint8 ⇄ float32 conversions and the uint8 global average pool in C (quant.c).

``quantize``/``dequantize`` are elementwise over dense memory, so they take contiguous tensors in
either memory format and keep it; each returns the call as a ``NativeCall`` (for chains), or None
where the input is not dense or not of the expected dtype.
"""

from __future__ import annotations

import ctypes
from typing import Any

import torch

from tensorkiln.backends.cpu import native
from tensorkiln.backends.cpu.native.chain import NativeCall

_p, _i, _l, _f = ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_float
_SIGNATURES: native.Signatures = {"tk_quantize_u8": [_p, _p, _l, _f, _f], "tk_dequantize_u8": [_p, _p, _l, _f, _f],
                                  "tk_qgap_nhwc_u8": [_p, _p, _i, _i, _i, _i, _f, _f, _i]}
CL = torch.channels_last


def library() -> Any:
    return native.load("quant", _SIGNATURES)


def available() -> bool:
    return library() is not None


def _like(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
    """An empty tensor of ``x``'s shape and dense layout, or None when ``x`` is not dense."""
    if x.is_contiguous():
        return torch.empty(x.shape, dtype=dtype)
    if x.dim() == 4 and x.is_contiguous(memory_format=CL):
        return torch.empty(x.shape, dtype=dtype, memory_format=CL)
    return None


def quantize(x: torch.Tensor, scale: float, zp: int) -> NativeCall | None:
    lib = library()
    y = _like(x, torch.uint8) if lib is not None and x.dtype == torch.float32 else None
    if y is None:
        return None
    return NativeCall(y, lib.tk_quantize_u8, [x, y, x.numel(), scale, float(zp)])


def dequantize(x: torch.Tensor, scale: float, zp: int) -> NativeCall | None:
    lib = library()
    y = _like(x, torch.float32) if lib is not None and x.dtype == torch.uint8 else None
    if y is None:
        return None
    return NativeCall(y, lib.tk_dequantize_u8, [x, y, x.numel(), scale, float(zp)])


def global_avg_pool(x: torch.Tensor, xz: int, m: float, yz: int, out_u8: bool) -> NativeCall | None:
    """[N, C, H, W] uint8 channels-last → [N, C, 1, 1] (uint8 codes, or float32 values)."""
    lib = library()
    if lib is None or x.dtype != torch.uint8 or x.dim() != 4 or not x.is_contiguous(memory_format=CL):
        return None
    n, c, h, w = x.shape
    y = torch.empty((n, c, 1, 1), dtype=torch.uint8 if out_u8 else torch.float32)
    return NativeCall(y, lib.tk_qgap_nhwc_u8, [x, y, n, h * w, c, xz, m, float(yz), int(out_u8)])
