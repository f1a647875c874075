"""Direct NHWC int8 convolution on AVX2 (qdirectconv.c): the QConv tactic ``direct-int8``.

uint8 activations, int8 weights with per-output-channel scales (|w| <= 64: the products are
added in int16 pairs, exact only within that bound; tensorkiln's own quantization keeps
weights to 7 bits on CPUs without VNNI), float32 bias, an optional residual (uint8 or float32,
in place when it dies here) and ReLU/Clip, written as float32 or requantized to uint8. The same
arithmetic as oneDNN's int8 convolution, through a call path of a few microseconds instead of
oneDNN's ≈ 80 µs per call (its primitive is re-created on every call from PyTorch).
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tensorkiln.backends.cpu import native
from tensorkiln.backends.cpu.native import chain as native_chain
from tensorkiln.backends.cpu.native.chain import NativeCall
from tensorkiln.backends.cpu.native.directconv import ConvGeometry, _has_avx2, _pixel_stride, im2col_geometry
from tensorkiln.errors import InternalError

_p, _i = ctypes.c_void_p, ctypes.c_int
_SIGNATURES: native.Signatures = {"tk_qconv_nhwc": [_p, _p, _p, _p, _p, _p, _p, _p, _p, _p, _p, _i, _i, _i],
                                  "tk_qconv_im2col_nhwc": [_p, _p, _p, _i] + [_p] * 10 + [_i, _i, _i]}
OB = 16  # output channels per weight block
MAX_TAPS = 64  # kernel height x width the kernel takes (qdirectconv.c)
MAX_W = 64  # largest |weight| for which vpmaddubsw's int16 pair sums cannot saturate (2 * 255 * 64 < 2^15)
L2_WEIGHTS = 128 << 10  # bytes of weights per group of output blocks
ACTIVATIONS = ("", "Relu", "Clip")
CL = torch.channels_last


def library() -> Any:
    return native.load("qdirectconv", _SIGNATURES)


def available() -> bool:
    return library() is not None and _has_avx2()


def pack_weight(qw: np.ndarray) -> tuple[torch.Tensor, int, int]:
    """int8 [K, C, KH, KW] → ([K/16][KH][KW][C4/4][16][4] zero padded, 32-byte aligned; K padded, C4)."""
    k, c, kh, kw = (int(d) for d in qw.shape)
    kp, c4 = (k + OB - 1) // OB * OB, (c + 3) // 4 * 4
    w = np.zeros((kp, c4, kh, kw), np.int8)
    w[:k, :c] = qw
    packed = np.ascontiguousarray(w.reshape(kp // OB, OB, c4 // 4, 4, kh, kw).transpose(0, 4, 5, 2, 1, 3)).reshape(-1)
    t = torch.empty(packed.size + 32, dtype=torch.int8)
    off = (-t.data_ptr()) % 32
    out = t[off:off + packed.size]
    out.copy_(torch.from_numpy(packed))
    return out, kp, c4


class QDirectConv(ConvGeometry):
    """A prepared int8 convolution; call with a uint8 NHWC tensor (and the residual, if any)."""

    def __init__(self, qw: np.ndarray, w_scale: np.ndarray, bias: np.ndarray | None, x_scale: float, x_zp: int,
                 strides: list[int], pads: list[int], dilations: list[int], act: str, act_params: list[float],
                 out_u8: bool, y_scale: float = 1.0, y_zp: int = 0, z_u8: bool = False, z_scale: float = 1.0,
                 z_zp: int = 0, inplace: bool = False) -> None:
        lib = library()
        if lib is None:
            raise RuntimeError(native.why_unavailable("qdirectconv"))
        if not _has_avx2():
            raise RuntimeError("the int8 direct convolution needs a CPU with AVX2")
        if qw.ndim != 4 or qw.dtype != np.int8:
            raise ValueError(f"expected int8 weights [K, C, KH, KW], got {qw.dtype} {tuple(qw.shape)}")
        if qw.shape[2] * qw.shape[3] > MAX_TAPS:
            raise ValueError(f"a {qw.shape[2]}x{qw.shape[3]} kernel has more than {MAX_TAPS} taps")
        if int(np.abs(qw.astype(np.int32)).max(initial=0)) > MAX_W:
            raise ValueError(f"weights wider than 7 bits (|w| > {MAX_W}) would saturate the int16 pair sums")
        if act not in ACTIVATIONS:
            raise ValueError(f"activation {act!r} is not one of {ACTIVATIONS}")
        if not 0 <= x_zp <= 255 or (out_u8 and not 0 <= y_zp <= 255):
            raise ValueError(f"uint8 zero points must be in [0, 255], got x {x_zp}, y {y_zp}")
        self.lib = lib
        self.k, self.c, self.kh, self.kw = (int(d) for d in qw.shape)
        self.wp, kp, self.c4 = pack_weight(qw)
        corr = np.zeros(kp, np.int32)
        corr[:self.k] = x_zp * qw.astype(np.int64).sum(axis=(1, 2, 3))
        self.corr = torch.from_numpy(corr)
        # f = (acc - corr) * m + c (+ z * zm); for a uint8 output everything is in units of y_scale
        div = float(y_scale) if out_u8 else 1.0
        m = np.zeros(kp, np.float64)
        m[:self.k] = float(x_scale) * np.asarray(w_scale, np.float64).reshape(-1) / div
        c = np.zeros(kp, np.float64)
        if bias is not None:
            c[:self.k] = np.asarray(bias, np.float64).reshape(-1) / div
        c += y_zp if out_u8 else 0
        zm = float(z_scale) / div if z_u8 else 1.0 / div
        if z_u8:
            c -= z_zp * zm
        self.m, self.cst = torch.from_numpy(m.astype(np.float32)), torch.from_numpy(c.astype(np.float32))
        lo, hi = -np.inf, np.inf
        if act == "Relu":
            lo = 0.0
        elif act == "Clip":
            lo, hi = float(act_params[0]), float(act_params[1])
        if out_u8:  # the saturating packs clamp to [0, 255]; 255 as upper bound also keeps huge
            # values from converting to INT_MIN
            lo, hi = lo / div + y_zp, min(hi / div + y_zp, 255.0)
            self.clamp = (1 if lo > 0 else 0) | 2
        else:
            self.clamp = (1 if lo > -np.inf else 0) | (2 if hi < np.inf else 0)
        big = float(np.finfo(np.float32).max)
        self.q = torch.tensor([zm, max(lo, -big), min(hi, big)], dtype=torch.float32)
        self.zero = torch.full((self.c4 + 64,), x_zp, dtype=torch.uint8)
        self.x_zp = x_zp
        self.flags = (1 if out_u8 else 0) | (2 if z_u8 else 0)
        self.out_dtype = torch.uint8 if out_u8 else torch.float32
        self.z_dtype = torch.uint8 if z_u8 else torch.float32
        self.sh, self.sw = (int(s) for s in strides)
        self.dh, self.dw = (int(d) for d in dilations)
        self.pt, self.pl, self.pb, self.pr = (int(p) for p in pads)
        self.kg = max(1, L2_WEIGHTS // (self.kh * self.kw * self.c4 * OB))
        self.inplace = inplace
        self._geom: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor, tuple[int, ...], tuple[int, ...]]] = {}
        self._layouts: dict[tuple[Any, ...], tuple[int, int, int, tuple[int, ...], tuple[int, ...]]] = {}
        # addresses of the constant buffers (kept alive by self)
        self._wp, self._corr, self._m = self.wp.data_ptr(), self.corr.data_ptr(), self.m.data_ptr()
        self._c, self._q, self._zero = self.cst.data_ptr(), self.q.data_ptr(), self.zero.data_ptr()

    def _extra_geometry(self) -> list[int]:
        return [self.c4]

    def _layout(self, x: torch.Tensor, padded: bool = False) -> tuple[int, int, int, tuple[int, ...],
                                                                       tuple[int, ...]] | None:
        """Per input layout (shape, strides, dtype) the geometry and pixel table addresses and the
        output shape and strides, checked once; None where the input must be copied first
        (``padded``: our own copy with the channels padded to a multiple of 4)."""
        if x.dim() != 4 or x.dtype != torch.uint8:
            raise ValueError(f"expected a 4-D uint8 input, got {x.dtype} {tuple(x.shape)}")
        n, c, h, w = x.shape
        if c != (self.c4 if padded else self.c):  # the kernel would read past the input
            raise ValueError(f"expected {self.c} input channels, got {c}")
        cs = _pixel_stride(x, torch.uint8)
        if c != self.c4 or cs == 0 or cs % 4:
            return None
        g, pix, shape, strides = self._shape(n, h, w, cs)
        got = (cs, g.data_ptr(), pix.data_ptr(), shape, strides)
        if len(self._layouts) < 16 and not padded:
            self._layouts[(tuple(x.shape), x.stride(), x.dtype)] = got
        return got

    def plan(self, x: torch.Tensor, z: torch.Tensor | None = None) -> NativeCall | None:
        """The kernel call for these inputs, with the output allocated (or the residual written in
        place); None where the input must be copied or padded first."""
        lay = self._layouts.get((tuple(x.shape), x.stride(), x.dtype)) or self._layout(x)
        if lay is None:
            return None
        return self._call(lay, x, z)

    def _call(self, lay: tuple[int, int, int, tuple[int, ...], tuple[int, ...]], x: torch.Tensor,
              z: torch.Tensor | None) -> NativeCall | None:
        _, g, pix, shape, strides = lay
        if z is not None:
            if tuple(z.shape) != shape or z.dtype != self.z_dtype:
                raise ValueError(f"residual {z.dtype} {tuple(z.shape)} for an output {self.z_dtype} {shape}")
            if not z.is_contiguous(memory_format=CL):
                return None
        if z is not None and self.inplace and z.dtype == self.out_dtype:
            y = z  # z dies here; each tile reads it, then writes the output over it
        else:
            y = torch.empty_strided(shape, strides, dtype=self.out_dtype)
        return NativeCall(y, self.lib.tk_qconv_nhwc, [x, self._wp, self._corr, self._m, self._c, z, y, self._zero, g,
                                                      pix, self._q, self.kg, self.clamp, self.flags])

    def __call__(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        call = self.plan(x, z)
        if call is None:
            padded = self.c != self.c4
            if padded:  # 4 readable channels per group: pad (their weights are 0)
                x = F.pad(x.permute(0, 2, 3, 1), (0, self.c4 - self.c), value=self.x_zp).permute(0, 3, 1, 2)
            else:
                x = x.contiguous(memory_format=CL)
            lay = self._layout(x, padded)
            if lay is None:
                raise InternalError(f"a channels-last copy of strides {x.stride()} is not NHWC-strided")
            call = self._call(lay, x, None if z is None else z.contiguous(memory_format=CL))
            if call is None:
                raise InternalError("the int8 direct convolution cannot run on channels-last copies")
        return native_chain.run(call)


class QIm2ColConv:
    """A convolution over few input channels (a 3-channel stem) as a 1x1 direct int8 convolution over
    patches: the codes of each output pixel's window are gathered (im2col, the padding as the zero
    point) into a scratch row of C*KH*KW bytes rounded up to 4, in the same call. The direct kernel
    on the raw input would run one 4-channel step per tap (2.5x oneDNN's time on ResNet-50's stem);
    over 147-byte patch rows it runs at its 1x1 speed. Takes the arguments of ``QDirectConv``."""

    def __init__(self, qw: np.ndarray, w_scale: np.ndarray, bias: np.ndarray | None, x_scale: float, x_zp: int,
                 strides: list[int], pads: list[int], dilations: list[int], act: str, act_params: list[float],
                 out_u8: bool, y_scale: float = 1.0, y_zp: int = 0, z_u8: bool = False, z_scale: float = 1.0,
                 z_zp: int = 0, inplace: bool = False) -> None:
        if qw.ndim != 4:
            raise ValueError(f"expected int8 weights [K, C, KH, KW], got {tuple(qw.shape)}")
        k, self.c, self.kh, self.kw = (int(d) for d in qw.shape)
        self.inner = QDirectConv(qw.reshape(k, -1, 1, 1), w_scale, bias, x_scale, x_zp, [1, 1], [0, 0, 0, 0], [1, 1],
                                 act, act_params, out_u8, y_scale, y_zp, z_u8, z_scale, z_zp, inplace)
        self.lib = self.inner.lib
        self.x_zp = x_zp
        self.strides = (int(strides[0]), int(strides[1]))
        self.dilations = (int(dilations[0]), int(dilations[1]))
        self.pads = tuple(int(p) for p in pads)
        self._layouts: dict[tuple[Any, ...], tuple[torch.Tensor, tuple[int, ...], Any]] = {}

    def _layout(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...], Any]:
        """Per input layout: the im2col geometry, the patch buffer's shape and the 1x1 layout over it."""
        key = (tuple(x.shape), x.stride())
        got = self._layouts.get(key)
        if got is None:
            if x.dim() != 4 or x.dtype != torch.uint8:
                raise ValueError(f"expected a 4-D uint8 input, got {x.dtype} {tuple(x.shape)}")
            ig, shape = im2col_geometry(x, self.c, (self.kh, self.kw), self.strides, self.dilations, self.pads,
                                        self.inner.c4)
            lay = self.inner._layout(torch.empty(shape, dtype=torch.uint8, memory_format=CL), padded=True)
            got = self._layouts.setdefault(key, (ig, shape, lay))  # kept: ig's address goes into the call
        return got

    def plan(self, x: torch.Tensor, z: torch.Tensor | None = None) -> NativeCall | None:
        if x.dim() == 4 and max(x.stride()) >= 2**31:
            return None
        ig, shape, lay = self._layout(x)
        col = torch.empty(shape, dtype=torch.uint8, memory_format=CL)
        call = self.inner._call(lay, col, z)
        if call is None:
            return None
        return NativeCall(call.out, self.lib.tk_qconv_im2col_nhwc, [x, ig.data_ptr(), col, self.x_zp, *call.args[1:]],
                          (col,))

    def __call__(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        call = self.plan(x, z) or self.plan(x.contiguous(), None if z is None else z.contiguous(memory_format=CL))
        if call is None:
            raise InternalError("the im2col int8 convolution cannot run on contiguous copies")
        return native_chain.run(call)
