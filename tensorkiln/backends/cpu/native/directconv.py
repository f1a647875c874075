"""Direct NHWC convolution on AVX2 register tiles (directconv.c).

Any kernel size, stride, dilation and padding, one group, float32, channels-last input (or a
channel slice of a wider channels-last tensor, read in place: the outputs of a channel split); bias,
a residual (written in place when it dies here) and ReLU/Clip are applied in the kernel's
store. The weights are packed once into [K/16][KH][KW][C][16].
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np
import torch

from tensorkiln.backends.cpu import native
from tensorkiln.backends.cpu.native import chain as native_chain
from tensorkiln.backends.cpu.native.chain import NativeCall
from tensorkiln.errors import InternalError

ACT_CODES = native.ACT_CODES

_p, _i, _f = ctypes.c_void_p, ctypes.c_int, ctypes.c_float
_SIGNATURES: native.Signatures = {"tk_conv_nhwc": [_p, _p, _p, _p, _p, _p, _p, _p, _i, _i, _i, _f, _f],
                                  "tk_conv_im2col_nhwc": [_p] * 10 + [_i, _i, _i, _f, _f],
                                  "tk_conv_rows_nhwc": [_p] * 10 + [_i, _i, _i, _f, _f]}
OB = 16  # output channels per weight block (two AVX2 vectors)
CL = torch.channels_last
L2_WEIGHTS = 128 << 10  # bytes of weights per group of output blocks: stays in L2 over the tiles


def library() -> Any:
    return native.load("directconv", _SIGNATURES)


def available() -> bool:
    return library() is not None and _has_avx2()


def _has_avx2() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line.split()
                    return "avx2" in flags and "fma" in flags
    except OSError:
        return False
    return False


def pack_weight(w: np.ndarray, ob: int) -> tuple[torch.Tensor, int]:
    """[K, C, KH, KW] → ([K/ob, KH, KW, C, ob] with K padded by zero filters, padded K)."""
    k, c, kh, kw = (int(d) for d in w.shape)
    kp = (k + ob - 1) // ob * ob
    wpad = np.zeros((kp, c, kh, kw), np.float32)
    wpad[:k] = w
    packed = wpad.reshape(kp // ob, ob, c, kh, kw).transpose(0, 3, 4, 2, 1)
    # 32-byte aligned for the kernel's aligned loads
    t = torch.empty(packed.size + 8)
    off = (-t.data_ptr() // 4) % 8
    out = t[off:off + packed.size]
    out.copy_(torch.from_numpy(np.ascontiguousarray(packed).reshape(-1)))
    return out, kp


def _pixel_stride(x: torch.Tensor, dtype: torch.dtype = torch.float32) -> int:
    """Elements between neighbouring pixels when ``x`` is a ``dtype`` tensor, NHWC-strided with
    contiguous channels (channels-last, or a channel slice of a wider one), else 0."""
    if x.dim() != 4 or x.dtype != dtype:
        return 0
    n, c, h, w = x.shape
    sn, sc, sh, sw = x.stride()
    if c == 0 or (sc != 1 and c > 1):
        return 0
    # the stride of a dimension of size 1 means nothing (PyTorch leaves any value there)
    cs = sw if w > 1 else sh if h > 1 else c
    if cs < c or (h > 1 and sh != w * cs) or (n > 1 and sn != h * w * cs):
        return 0
    return int(cs)


def out_hw(h: int, w: int, kernel: tuple[int, int], strides: tuple[int, int], dilations: tuple[int, int],
           pads: tuple[int, int, int, int]) -> tuple[int, int]:
    """Output height and width of a convolution; pads are (top, left, bottom, right)."""
    (kh, kw), (sh, sw), (dh, dw), (pt, pl, pb, pr) = kernel, strides, dilations, pads
    return (h + pt + pb - dh * (kh - 1) - 1) // sh + 1, (w + pl + pr - dw * (kw - 1) - 1) // sw + 1


def pixel_table(n: int, ho: int, wo: int, strides: tuple[int, int], pt: int, pl: int) -> torch.Tensor:
    """Per output pixel (n, oh, ow order): its image, top input row and left input column (int32)."""
    nn, oh, ow = np.meshgrid(np.arange(n), np.arange(ho), np.arange(wo), indexing="ij")
    pix = np.stack([nn, oh * strides[0] - pt, ow * strides[1] - pl], axis=-1).astype(np.int32)
    return torch.from_numpy(np.ascontiguousarray(pix.reshape(-1)))


class ConvGeometry:
    """Shape bookkeeping shared by the direct kernels: output size, and per input size and pixel
    stride the kernel's geometry vector, its pixel table and the output's shape and strides."""

    k: int
    c: int
    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    pt: int
    pl: int
    pb: int
    pr: int
    _geom: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor, tuple[int, ...], tuple[int, ...]]]

    def _extra_geometry(self) -> list[int]:
        return []

    def out_hw(self, h: int, w: int) -> tuple[int, int]:
        return out_hw(h, w, (self.kh, self.kw), (self.sh, self.sw), (self.dh, self.dw),
                      (self.pt, self.pl, self.pb, self.pr))

    def _shape(self, n: int, h: int, w: int, cs: int) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...],
                                                                tuple[int, ...]]:
        got = self._geom.get((n, h, w, cs))
        if got is None:
            ho, wo = self.out_hw(h, w)
            if ho < 1 or wo < 1:
                raise ValueError(f"a {self.kh}x{self.kw} convolution of a {h}x{w} input has no output")
            g = torch.tensor([n, h, w, self.c, self.k, self.kh, self.kw, self.sh, self.sw, self.dh, self.dw,
                              self.pt, self.pl, ho, wo, cs, *self._extra_geometry()], dtype=torch.int32)
            got = (g, pixel_table(n, ho, wo, (self.sh, self.sw), self.pt, self.pl), (n, self.k, ho, wo),
                   (ho * wo * self.k, 1, wo * self.k, self.k))
            # setdefault: two threads may both compute it; every caller must get the stored tensors
            # (their addresses go into kernel calls and chain plans, which outlive this call)
            got = self._geom.setdefault((n, h, w, cs), got)
        return got


class DirectConv(ConvGeometry):
    """A prepared convolution; call with an NHWC (channels_last) float32 tensor."""

    def __init__(self, w: np.ndarray, bias: np.ndarray | None, strides: list[int], pads: list[int],
                 dilations: list[int], act: str, act_params: list[float], inplace: bool = False,
                 cb: int | None = None, kg: int | None = None) -> None:
        lib = library()
        if lib is None:
            raise RuntimeError(native.why_unavailable("directconv"))
        if not _has_avx2():
            raise RuntimeError("the direct convolution kernels need a CPU with AVX2 and FMA")
        self.lib = lib
        self.k, self.c, self.kh, self.kw = (int(d) for d in w.shape)
        self.wp, kp = pack_weight(w, OB)
        self.cb = cb or self.c  # input channels per block: by default the whole reduction in registers
        self.kg = kg or max(1, L2_WEIGHTS // (self.kh * self.kw * self.c * OB * 4))
        b = np.zeros(kp, np.float32)
        if bias is not None:
            b[:self.k] = bias
        self.bias = torch.from_numpy(b)
        self.zero = torch.zeros(self.c + 8)
        self.sh, self.sw = (int(s) for s in strides)
        self.dh, self.dw = (int(d) for d in dilations)
        self.pt, self.pl, self.pb, self.pr = (int(p) for p in pads)
        self.act = ACT_CODES[act]
        self.lo, self.hi = (float(act_params[0]), float(act_params[1])) if act == "Clip" else (0.0, 0.0)
        self.inplace = inplace
        self._geom: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor, tuple[int, ...], tuple[int, ...]]] = {}
        self._layouts: dict[tuple[Any, ...], tuple[int, int, int, tuple[int, ...], tuple[int, ...]]] = {}
        # addresses of the constant buffers (kept alive by self)
        self._wp, self._bias, self._zero = self.wp.data_ptr(), self.bias.data_ptr(), self.zero.data_ptr()

    def _layout(self, x: torch.Tensor) -> tuple[int, int, int, tuple[int, ...], tuple[int, ...]]:
        """Per input layout (shape, strides, dtype): its pixel stride (0: not NHWC-strided, copy it
        first), the addresses of the geometry and pixel table, the output shape and strides. Checked
        once per layout: a call on a known layout then costs three tensor queries (ResNet-50: Python
        around each kernel call 41.5 → 36.5 µs median; its caches are cold after a kernel)."""
        cs = _pixel_stride(x)
        n, c, h, w = x.shape
        if c != self.c:  # the kernel would read past the input
            raise ValueError(f"expected {self.c} input channels, got {c}")
        if cs == 0:
            return 0, 0, 0, (), ()
        g, pix, shape, strides = self._shape(n, h, w, cs)
        got = (cs, g.data_ptr(), pix.data_ptr(), shape, strides)
        if len(self._layouts) < 16:
            self._layouts[(tuple(x.shape), x.stride(), x.dtype)] = got
        return got

    def plan(self, x: torch.Tensor, z: torch.Tensor | None = None) -> NativeCall | None:
        """The kernel call for these inputs, with the output allocated (or the residual written in
        place); None where an input must be copied first (not NHWC-strided float32)."""
        if x.dim() != 4:
            raise ValueError(f"expected a 4-D input, got {x.dim()}-D")
        lay = self._layouts.get((tuple(x.shape), x.stride(), x.dtype)) or self._layout(x)
        if lay[0] == 0:
            return None
        _, g, pix, shape, strides = lay
        y = self.output(shape, strides, z)
        if y is None:
            return None
        return NativeCall(y, self.lib.tk_conv_nhwc, [x, self._wp, self._bias, z, y, self._zero, g, pix, self.cb,
                                                     self.kg, self.act, self.lo, self.hi])

    def output(self, shape: tuple[int, ...], strides: tuple[int, ...], z: torch.Tensor | None) -> torch.Tensor | None:
        """The output tensor: new, or the residual ``z`` written in place; None where ``z`` must be
        copied first (not channels-last float32)."""
        if z is not None:
            if tuple(z.shape) != shape:
                raise ValueError(f"residual of shape {tuple(z.shape)} for an output of shape {shape}")
            if z.dtype != torch.float32 or not z.is_contiguous(memory_format=CL):
                return None
        # in place: z dies here (checked by the in-place residual pass); each tile reads then writes it
        return z if z is not None and self.inplace else torch.empty_strided(shape, strides)  # channels-last

    def __call__(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        call = self.plan(x, z)
        if call is None:  # a channels-last float32 copy of the input (and residual)
            x = x.to(torch.float32).contiguous(memory_format=CL)
            if self._layout(x)[0] == 0:
                raise InternalError(f"a channels-last copy of strides {x.stride()} is not NHWC-strided")
            call = self.plan(x, None if z is None else z.to(torch.float32).contiguous(memory_format=CL))
            if call is None:
                raise InternalError("a direct convolution cannot run on channels-last float32 copies")
        return native_chain.run(call)


def im2col_geometry(x: torch.Tensor, c: int, kernel: tuple[int, int], strides: tuple[int, int],
                    dilations: tuple[int, int], pads: tuple[int, ...], cp: int) -> tuple[torch.Tensor, tuple[int, ...]]:
    """The im2col kernels' geometry vector for input ``x`` (any strides) and the patch buffer's
    shape [N, cp, HO, WO] (cp: bytes or floats per patch row, >= C * KH * KW)."""
    n, xc, h, w = x.shape
    if xc != c:
        raise ValueError(f"expected {c} input channels, got {xc}")
    ho, wo = out_hw(h, w, kernel, strides, dilations, (pads[0], pads[1], pads[2], pads[3]))
    if ho < 1 or wo < 1:
        raise ValueError(f"a {kernel[0]}x{kernel[1]} convolution of a {h}x{w} input has no output")
    ig = torch.tensor([n, c, h, w, *kernel, *strides, *dilations, pads[0], pads[1], ho, wo, cp, *x.stride()],
                      dtype=torch.int32)
    return ig, (n, cp, ho, wo)


class Im2ColConv:
    """A convolution over few input channels (a 3-channel stem) as a 1x1 direct convolution over
    patch rows: each thread gathers the C*KH*KW inputs of a few tiles' pixels (padding as 0) into
    rows while they stay in cache, then runs the 1x1 kernel on them (directconv.c). The direct
    kernel on the raw input would run 3 channels per tap (ResNet-50's stem: 5.7 ms vs oneDNN's
    3.0). Takes the arguments of ``DirectConv``."""

    def __init__(self, w: np.ndarray, bias: np.ndarray | None, strides: list[int], pads: list[int],
                 dilations: list[int], act: str, act_params: list[float], inplace: bool = False) -> None:
        k, self.c, self.kh, self.kw = (int(d) for d in w.shape)
        self.taps = self.c * self.kh * self.kw
        self.inner = DirectConv(np.ascontiguousarray(w.reshape(k, self.taps, 1, 1)), bias, [1, 1], [0, 0, 0, 0],
                                [1, 1], act, act_params, inplace=inplace)
        self.lib = self.inner.lib
        self.cp = (self.taps + 7) // 8 * 8  # rows 32-byte aligned
        self.strides = (int(strides[0]), int(strides[1]))
        self.dilations = (int(dilations[0]), int(dilations[1]))
        self.pads = tuple(int(p) for p in pads)
        self._layouts: dict[tuple[Any, ...], tuple[torch.Tensor, tuple[int, ...]]] = {}

    def plan(self, x: torch.Tensor, z: torch.Tensor | None = None) -> NativeCall | None:
        if x.dim() != 4 or x.dtype != torch.float32 or max(x.stride()) >= 2**31:
            return None
        key = (tuple(x.shape), x.stride())
        got = self._layouts.get(key)
        if got is None:
            got = im2col_geometry(x, self.c, (self.kh, self.kw), self.strides, self.dilations, self.pads, self.cp)
            got = self._layouts.setdefault(key, got)  # kept: its address goes into the call (see _shape)
        ig, shape = got
        col = torch.empty(shape, memory_format=CL)
        call = self.inner.plan(col[:, :self.taps], z)  # the 1x1 kernel reads taps floats of each row
        if call is None:
            return None
        return NativeCall(call.out, self.lib.tk_conv_im2col_nhwc, [x, ig.data_ptr(), col, *call.args[1:]], (col,))

    def __call__(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        return _run_or_copy(self.plan, x, z, "im2col")


class RowsConv:
    """A convolution over few input channels (a 3-channel stem) on kernel rows: the input is copied
    once into a zero-bordered NHWC buffer, where one kernel row of an output pixel is KW*C
    consecutive floats; the direct kernel then runs a KHx1 convolution over "pixels" of KW*C
    channels (C floats apart) with no padding — no per-pixel gather and no bounds tests (ResNet-50's
    stem: 2.0-2.5 ms vs 3.2-3.5 through patch rows, ``Im2ColConv``). Needs dilation 1 along W.
    Takes the arguments of ``DirectConv``."""

    def __init__(self, w: np.ndarray, bias: np.ndarray | None, strides: list[int], pads: list[int],
                 dilations: list[int], act: str, act_params: list[float], inplace: bool = False) -> None:
        self.k, self.c, self.kh, self.kw = (int(d) for d in w.shape)
        if int(dilations[1]) != 1:
            raise ValueError("kernel rows need dilation 1 along the width")
        rows = np.ascontiguousarray(w.transpose(0, 3, 1, 2).reshape(self.k, self.kw * self.c, self.kh, 1))
        self.strides = (int(strides[0]), int(strides[1]))
        self.dilations = (int(dilations[0]), 1)
        self.pads = tuple(int(p) for p in pads)
        self.inner = DirectConv(rows, bias, list(self.strides), [0, 0, 0, 0], list(self.dilations), act,
                                act_params, inplace=inplace)
        self.lib = self.inner.lib
        self._layouts: dict[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor, torch.Tensor, int,
                                                   tuple[int, ...], tuple[int, ...]]] = {}

    def _layout(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, tuple[int, ...],
                                                 tuple[int, ...]]:
        """Per input layout: the copy's geometry, the kernel's geometry and pixel table, the copy's
        size in floats, the output's shape and strides."""
        n, c, h, w = (int(d) for d in x.shape)
        if c != self.c:
            raise ValueError(f"expected {self.c} input channels, got {c}")
        pt, pl, pb, pr = self.pads
        ho, wo = out_hw(h, w, (self.kh, self.kw), self.strides, self.dilations, (pt, pl, pb, pr))
        if ho < 1 or wo < 1:
            raise ValueError(f"a {self.kh}x{self.kw} convolution of a {h}x{w} input has no output")
        hp, wp = h + pt + pb, w + pl + pr
        rg = torch.tensor([n, c, h, w, pt, pl, hp, wp, *x.stride()], dtype=torch.int32)
        g = torch.tensor([n, hp, wp, self.kw * c, self.k, self.kh, 1, *self.strides, *self.dilations, 0, 0, ho, wo, c],
                         dtype=torch.int32)
        pix = pixel_table(n, ho, wo, self.strides, 0, 0)
        return rg, g, pix, n * hp * wp * c, (n, self.k, ho, wo), (ho * wo * self.k, 1, wo * self.k, self.k)

    def plan(self, x: torch.Tensor, z: torch.Tensor | None = None) -> NativeCall | None:
        if x.dim() != 4:
            raise ValueError(f"expected a 4-D input, got {x.dim()}-D")
        if x.dtype != torch.float32 or max(x.stride()) >= 2**31:
            return None
        key = (tuple(x.shape), x.stride())
        got = self._layouts.get(key)
        if got is None:
            got = self._layout(x)
            got = self._layouts.setdefault(key, got)  # kept: their addresses go into the call (see _shape)
        rg, g, pix, size, shape, strides = got
        y = self.inner.output(shape, strides, z)
        if y is None:
            return None
        xp = torch.empty(size)
        inner = self.inner
        return NativeCall(y, self.lib.tk_conv_rows_nhwc,
                          [x, rg.data_ptr(), xp, inner._wp, inner._bias, z, y, inner._zero, g.data_ptr(),
                           pix.data_ptr(), inner.cb, inner.kg, inner.act, inner.lo, inner.hi], (xp,))

    def __call__(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        return _run_or_copy(self.plan, x, z, "kernel-row")


def _run_or_copy(plan: Any, x: torch.Tensor, z: torch.Tensor | None, what: str) -> torch.Tensor:
    """Run ``plan``'s call on float32 ``x`` (any strides), else on contiguous float32 copies (and a
    channels-last copy of the residual)."""
    call = plan(x.float(), z) or plan(x.float().contiguous(), None if z is None else
                                      z.float().contiguous(memory_format=CL))
    if call is None:
        raise InternalError(f"the {what} convolution cannot run on contiguous float32 copies")
    return native_chain.run(call)
