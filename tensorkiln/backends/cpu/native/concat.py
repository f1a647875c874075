"""Channel concatenation of channels-last tensors with the C kernel in concat.c: one native call
that chains can hold (GoogLeNet's inception outputs: 9 concatenations 1.76 ms through torch.cat
from Python, vs onnxruntime's 0.83)."""

from __future__ import annotations

import ctypes
from typing import Any

import torch

from tensorkiln.backends.cpu import native
from tensorkiln.backends.cpu.native.chain import NativeCall
from tensorkiln.backends.cpu.native.directconv import _pixel_stride

MAX_INPUTS = 8
_p, _i, _l = ctypes.c_void_p, ctypes.c_int, ctypes.c_long
_SIGNATURES: native.Signatures = {"tk_concat_nhwc": [_p, _l, _l, _i] + [_p, _l, _l] * MAX_INPUTS}


def library() -> Any:
    return native.load("concat", _SIGNATURES)


def concat_channels_plan(xs: tuple[torch.Tensor, ...]) -> NativeCall | None:
    """The call that concatenates 4-D tensors along channels into a new channels-last tensor; None
    unless there are 2..8 inputs of one dtype and N, H, W, each NHWC-strided (channels-last, or a
    channel slice of a wider one)."""
    if not 2 <= len(xs) <= MAX_INPUTS or any(x.dim() != 4 for x in xs):
        return None
    n, _, h, w = xs[0].shape
    dt = xs[0].dtype
    if any(x.dtype != dt or x.shape[0] != n or x.shape[2:] != (h, w) or x.shape[1] == 0 for x in xs):
        return None
    strides = [_pixel_stride(x, dt) for x in xs]
    if 0 in strides or n * h * w == 0:
        return None
    lib = library()
    if lib is None:
        return None
    es = xs[0].element_size()
    ctot = sum(int(x.shape[1]) for x in xs)
    y = torch.empty((n, ctot, h, w), dtype=dt, memory_format=torch.channels_last)
    args: list[Any] = [y, n * h * w, ctot * es, len(xs)]
    for x, cs in zip(xs, strides):
        args += [x, int(x.shape[1]) * es, cs * es]
    args += [None, 0, 0] * (MAX_INPUTS - len(xs))
    return NativeCall(y, lib.tk_concat_nhwc, args)
