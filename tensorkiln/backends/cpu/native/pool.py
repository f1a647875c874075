"""Max pooling over channels-last float32 or uint8 tensors with the C kernel in pool.c."""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import Any

import torch

from tensorkiln.backends.cpu import native
from tensorkiln.backends.cpu.native import chain as native_chain
from tensorkiln.backends.cpu.native.chain import NativeCall

_i, _p = ctypes.c_int, ctypes.c_void_p


_SIGNATURES: native.Signatures = {"tk_maxpool2d_nhwc": [_p] + [_i] * 14 + [_p],
                                  "tk_maxpool2d_nhwc_u8": [_p] + [_i] * 14 + [_p],
                                  "tk_gap_nhwc_f32": [_p, _p, _i, _i, _i]}


def library() -> Any:
    return native.load("pool", _SIGNATURES)


def available() -> bool:
    return library() is not None


def maxpool2d_nhwc(x: torch.Tensor, kernel: Sequence[int], strides: Sequence[int], pads_begin: Sequence[int],
                   dilations: Sequence[int], out_hw: Sequence[int]) -> torch.Tensor:
    """``x`` must be a channels-last float32 or uint8 NCHW tensor; returns channels-last [N, C, *out_hw]
    of its dtype (for uint8 a window entirely in the padding gives 0)."""
    return native_chain.run(maxpool2d_plan(x, kernel, strides, pads_begin, dilations, out_hw))


def maxpool2d_plan(x: torch.Tensor, kernel: Sequence[int], strides: Sequence[int], pads_begin: Sequence[int],
                   dilations: Sequence[int], out_hw: Sequence[int]) -> NativeCall:
    """The call ``maxpool2d_nhwc`` makes, with its output allocated."""
    lib = library()
    n, c, h, w = x.shape
    ho, wo = out_hw
    y = torch.empty((n, c, ho, wo), dtype=x.dtype, memory_format=torch.channels_last)
    fn = lib.tk_maxpool2d_nhwc_u8 if x.dtype == torch.uint8 else lib.tk_maxpool2d_nhwc
    return NativeCall(y, fn, [x, n, h, w, c, kernel[0], kernel[1], strides[0], strides[1], pads_begin[0], pads_begin[1],
                              dilations[0], dilations[1], ho, wo, y])


def global_avg_pool_plan(x: torch.Tensor) -> NativeCall | None:
    """[N, C, H, W] float32 channels-last → [N, C, 1, 1] (the mean over H x W), or None where ``x``
    is not a dense channels-last float32 tensor with more than one pixel."""
    lib = library()
    if lib is None or x.dtype != torch.float32 or x.dim() != 4 or x.shape[2] * x.shape[3] < 2 or \
            not x.is_contiguous(memory_format=torch.channels_last) or x.numel() >= 2**31:
        return None
    n, c, h, w = x.shape
    y = torch.empty((n, c, 1, 1))
    return NativeCall(y, lib.tk_gap_nhwc_f32, [x, y, n, h * w, c])
