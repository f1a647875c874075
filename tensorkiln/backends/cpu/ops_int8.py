"""CPU kernels for tensorkiln's int8 ops (domain ``tensorkiln``), made by ``passes/quantize*.py``.

All run oneDNN's int8 primitives through PyTorch on plain ``uint8`` / ``int8`` tensors:

* ``QConv``: ``onednn::qconv2d_pointwise`` (``.binary`` with a ``sum`` post-op for a residual
  input) on channels-last uint8 activations and int8 weights prepacked per input shape,
  per-output-channel weight scales, fp32 bias; the output is requantized to uint8 (for the
  next int8 layer) or written as fp32 (dequantization fused). A float input is quantized
  first (one ``quantize_per_tensor``).
* ``QGemm``: ``onednn::qlinear_pointwise`` likewise, over the last axis.
* ``DynQGemm``: dynamic quantization — int8 weights, the input quantized per call over its
  own range, float32 output.
* ``Quantize`` / ``Dequantize``: uint8 ⇄ float32 at the border of an int8 region.
* ``QMaxPool``: max pooling on uint8 codes (max commutes with quantization, so scale and zero
  point pass through), with the native NHWC kernel (native/pool.c; 0.6 → 0.18 ms on the ResNet-50
  stem pool in the engine), else as the maximum of strided views: ATen's max_pool2d has no fast channels-last
  uint8 kernel and quantized-tensor APIs are deprecated in PyTorch.

Measured on a 2-core AVX2 Zen 3 (see benchmarks/bench_int8.py): ``onednn::qconv2d_pointwise``
and ``quantized::conv2d`` with the ``onednn`` engine run at the same speed (the same oneDNN
primitive); the ``x86`` engine (fbgemm for some shapes) is slower; ``qnnpack`` slower than fp32.
The plain-tensor ``onednn`` ops are used: no quantized-tensor wrappers per call, fp32 output and
fused residual sums available.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tensorkiln.backends.cpu.base import BuildContext, Factory, Kernel, const_input, torch_const, unsupported
from tensorkiln.backends.cpu.native import chain as native_chain
from tensorkiln.backends.cpu.native import quant as native_quant
from tensorkiln.backends.cpu.native.chain import NativeCall
from tensorkiln.backends.cpu.ops_fused import make_activation
from tensorkiln.ir import Node

CL = torch.channels_last
# FusedConv activation → oneDNN int8 post-op name
_POST = {"": "none", "Relu": "relu", "Clip": "hardtanh", "HardSwish": "hardswish"}
_LINEAR_POST = {"": "none", "Relu": "relu"}


def quantize_u8(x: torch.Tensor, scale: float, zp: int) -> torch.Tensor:
    """float → uint8 ``clamp(round_half_even(x / scale) + zp, 0, 255)`` (ONNX QuantizeLinear), keeping the
    memory format."""
    if x.dtype != torch.float32:
        x = x.float()
    return x.div(scale).round_().add_(zp).clamp_(0, 255).to(torch.uint8)


def dequantize_u8(q: torch.Tensor, scale: float, zp: int) -> torch.Tensor:
    return q.to(torch.float32).sub_(zp).mul_(scale)


def _q(node: Node, name: str) -> tuple[float, int]:
    return float(node.attrs[f"{name}_scale"]), int(node.attrs[f"{name}_zero_point"])


def qconv(node: Node, ctx: BuildContext) -> Kernel:
    qw_np, ws_np = const_input(node, 1), const_input(node, 2)
    if qw_np is None or ws_np is None:
        raise unsupported(node, "QConv needs constant int8 weights and scales")
    qw, ws = torch_const(qw_np), torch_const(ws_np)
    b_np = const_input(node, 3)
    b = torch_const(b_np) if b_np is not None else None
    k = list(qw.shape[2:])
    nd = len(k)
    strides = [int(s) for s in node.attrs.get("strides", [1] * nd)]
    dil = [int(d) for d in node.attrs.get("dilations", [1] * nd)]
    group = int(node.attrs.get("group", 1))
    pads = [int(p) for p in node.attrs.get("pads", [0] * (2 * nd))]
    if node.attrs.get("auto_pad", "NOTSET") == "VALID":
        pads = [0] * (2 * nd)
    pads_onnx = list(pads)
    pre_pad: list[int] | None = None
    if pads[:nd] != pads[nd:]:
        pre_pad = []
        for i in reversed(range(nd)):
            pre_pad += [pads[i], pads[i + nd]]
        pads = [0] * (2 * nd)
    pad = pads[:nd]
    xs, xz = _q(node, "x")
    out_u8 = node.attrs.get("out_dtype", "float32") == "uint8"
    ys, yz = _q(node, "y") if out_u8 else (1.0, 0)
    out_dt = torch.uint8 if out_u8 else torch.float32
    act_name = str(node.attrs.get("activation", ""))
    act, _, scalars, _ = make_activation(act_name, list(node.attrs.get("activation_params", [])))
    post = _POST.get(act_name)
    after: Any = None  # activation computed on the fp32 output (not a oneDNN int8 post-op)
    if post is None:
        if out_u8:
            raise unsupported(node, f"QConv with activation {act_name} cannot write uint8")
        post, scalars, after = "none", [], act
    has_z = len(node.inputs) > 4 and node.inputs[4] is not None
    if has_z and post not in ("none", "relu"):
        raise unsupported(node, f"QConv with a residual input and activation {act_name}")
    zs, zz = _q(node, "z") if has_z and "z_scale" in node.attrs else (1.0, 0)
    # the sum accumulates into the residual in place: a private copy, unless the residual dies
    # here (passes/quantize.py marks residual_inplace)
    inplace = bool(node.attrs.get("residual_inplace", False))
    tactic = node.attrs.get("tactic") or default_qconv_tactic(node)
    if tactic not in QCONV_TACTICS:
        raise unsupported(node, f"unknown QConv tactic {tactic!r}; tactics are {list(QCONV_TACTICS)}")
    if tactic in ("direct-int8", "im2col-int8") and direct_int8_ok(node):
        return _direct_int8_kernel(node, qw_np, ws_np, b_np, strides, pads_onnx, dil, act_name, out_u8, inplace,
                                   im2col=tactic == "im2col-int8")
    node.attrs["tactic"] = "onednn-int8"  # (direct-int8 tuned where it was available; same arithmetic)
    wz = torch.zeros(qw.shape[0], dtype=torch.int64)
    packed: dict[tuple[int, ...], torch.Tensor] = {}

    def pack(shape: tuple[int, ...]) -> torch.Tensor:
        wp = packed.get(shape)
        if wp is None:
            if len(packed) >= 4:
                for key, v in packed.items():
                    if key[1:] == shape[1:]:
                        return v
            wp = torch.ops.onednn.qconv_prepack(qw, ws, xs, xz, strides, pad, dil, group, list(shape))
            if len(packed) < 8:
                packed[shape] = wp
        return wp

    x_val = node.inputs[0]
    if x_val is not None and x_val.shape is not None and len(x_val.shape) == 4 and pre_pad is None and \
            all(isinstance(d, int) for d in x_val.shape[1:]):
        batch = x_val.shape[0] if isinstance(x_val.shape[0], int) else 1
        pack((batch, *x_val.shape[1:]))  # type: ignore[arg-type]
    conv = torch.ops.onednn.qconv2d_pointwise
    conv_sum = torch.ops.onednn.qconv2d_pointwise.binary

    def prepare(x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.uint8:
            x = quantize_u8(x.contiguous(memory_format=CL), xs, xz)
        if pre_pad is not None:
            x = F.pad(x, pre_pad, value=xz)
        return x.contiguous(memory_format=CL)


    def accumulator(z: torch.Tensor) -> torch.Tensor:
        if inplace and z.dtype == out_dt:
            return z.contiguous(memory_format=CL)
        if out_u8:
            if z.dtype == torch.uint8:
                return z.clone(memory_format=CL)
            return quantize_u8(z.contiguous(memory_format=CL), zs, zz)
        if z.dtype == torch.uint8:
            return dequantize_u8(z.contiguous(memory_format=CL), zs, zz)
        return z.clone(memory_format=CL)

    acc_s, acc_z = (zs, zz) if out_u8 else (1.0, 0)
    unary = post if post != "none" else "none"

    def kernel(x: torch.Tensor, _w: Any = None, _s: Any = None, _b: Any = None,
               z: torch.Tensor | None = None) -> torch.Tensor:
        x = prepare(x)
        wp = packed.get(tuple(x.shape))
        if wp is None:
            wp = pack(tuple(x.shape))
        if z is None:
            y = conv(x, xs, xz, wp, ws, wz, b, strides, pad, dil, group, ys, yz, out_dt, post, scalars, "")
        else:
            acc = accumulator(z)
            y = conv_sum(x, xs, xz, wp, ws, wz, acc, b, strides, pad, dil, group, ys, yz, out_dt,
                         acc_s, acc_z, "sum", 1.0, unary, [], "")
        return after(y) if after is not None else y

    return kernel


# tactic id → version (timing-cache keys); direct-int8: backends/cpu/native/qdirectconv.c
QCONV_TACTICS = {"onednn-int8": 1, "direct-int8": 1, "im2col-int8": 1}
IM2COL_MAX = 1024  # input channels x taps up to which a convolution over < 16 channels runs as im2col-int8


def default_qconv_tactic(node: Node) -> str:
    """The heuristic choice (optimization level 0, and the autotuner's incumbent): the direct kernel
    wherever it can run and the layer has at least 16 input channels; a convolution over fewer
    channels (a 3-channel stem: the direct kernel would run one 4-channel step per tap, 2.5x
    oneDNN's time) as im2col-int8, the direct kernel over patch rows; 1x1 ones over few channels on
    oneDNN. Measured on ResNet-50 INT8 (whole
    engines, 100 paired rounds each order): direct-int8 on every layer but the stem ran 0.956x and
    1/1.029x the all-oneDNN engine's time."""
    qw = const_input(node, 1)
    if qw is None or qw.ndim != 4 or not direct_int8_ok(node):
        return "onednn-int8"
    if qw.shape[1] >= 16:
        return "direct-int8"
    taps = int(np.prod(qw.shape[1:]))
    return "im2col-int8" if qw.shape[2] * qw.shape[3] > 1 and taps <= IM2COL_MAX else "onednn-int8"


def qconv_tactics(node: Node) -> dict[str, int]:
    """QConv's tactics for the autotuner: none, the heuristic decides (a tactics file can still pin
    either). Timed in place inside the network, oneDNN's steps look faster than they are: its
    primitive setup (≈ 80 µs a call) runs with the caches the previous kernel left, and the
    in-network tuner moved 30 of ResNet-50's 52 layers to oneDNN — 1.036x the time of keeping them
    all on direct-int8 (100 paired rounds)."""
    return {}


def direct_int8_ok(node: Node) -> bool:
    """The int8 direct kernel can run ``node``: 2-D, one group, ReLU/Clip/none, weights of at
    most 7 bits (|w| <= 64), and a compiler and AVX2 here."""
    from tensorkiln.backends.cpu.native import qdirectconv

    qw = const_input(node, 1)
    if qw is None or qw.ndim != 4 or qw.dtype != np.int8 or int(node.attrs.get("group", 1)) != 1:
        return False
    if qw.shape[2] * qw.shape[3] > qdirectconv.MAX_TAPS:
        return False
    if str(node.attrs.get("activation", "")) not in qdirectconv.ACTIVATIONS:
        return False
    if node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        return False
    return int(np.abs(qw.astype(np.int32)).max(initial=0)) <= qdirectconv.MAX_W and qdirectconv.available()


def _direct_int8_kernel(node: Node, qw: np.ndarray, ws: np.ndarray, b: np.ndarray | None, strides: list[int],
                        pads: list[int], dil: list[int], act: str, out_u8: bool, inplace: bool,
                        im2col: bool = False) -> Kernel:
    from tensorkiln.backends.cpu.native.qdirectconv import QDirectConv, QIm2ColConv

    xs, xz = _q(node, "x")
    ys, yz = _q(node, "y") if out_u8 else (1.0, 0)
    has_z = len(node.inputs) > 4 and node.inputs[4] is not None
    zs, zz = _q(node, "z") if has_z and "z_scale" in node.attrs else (1.0, 0)
    params = [float(v) for v in node.attrs.get("activation_params", [])]
    convs: dict[bool, QDirectConv | QIm2ColConv] = {}
    cls = QIm2ColConv if im2col else QDirectConv

    def conv_for(z_u8: bool) -> QDirectConv | QIm2ColConv:
        conv = convs.get(z_u8)
        if conv is None:  # made per residual type (uint8 or float32) on first use
            conv = convs[z_u8] = cls(qw, ws, b, xs, xz, strides, pads, dil, act, params, out_u8, ys, yz,
                                     z_u8=z_u8, z_scale=zs, z_zp=zz, inplace=inplace)
        return conv

    conv_for(out_u8)  # the usual case prepared now: a residual of the output's type

    def kernel(x: torch.Tensor, _w: Any = None, _s: Any = None, _b: Any = None,
               z: torch.Tensor | None = None) -> torch.Tensor:
        if x.dtype != torch.uint8:
            x = quantize_u8(x.contiguous(memory_format=CL), xs, xz)
        if z is None:
            return conv_for(out_u8)(x)
        z_u8 = z.dtype == torch.uint8
        if out_u8 and not z_u8:  # a float residual into a uint8 sum: quantized, as oneDNN's sum takes it
            z, z_u8 = quantize_u8(z.contiguous(memory_format=CL), zs, zz), True
        elif z.dtype not in (torch.uint8, torch.float32):
            z = z.float()
        return conv_for(z_u8)(x, z)

    def plan(x: torch.Tensor, _w: Any = None, _s: Any = None, _b: Any = None,
             z: torch.Tensor | None = None) -> NativeCall | None:
        if x.dtype != torch.uint8 or (z is not None and (z.dtype != torch.uint8 if out_u8 else
                                                         z.dtype not in (torch.uint8, torch.float32))):
            return None
        return conv_for(z is not None and z.dtype == torch.uint8).plan(x, z) if z is not None else \
            conv_for(out_u8).plan(x)

    kernel.plan = plan  # type: ignore[attr-defined]
    return kernel


def qgemm(node: Node, ctx: BuildContext) -> Kernel:
    qw_np, ws_np = const_input(node, 1), const_input(node, 2)
    if qw_np is None or ws_np is None:
        raise unsupported(node, "QGemm needs constant int8 weights and scales")
    qw, ws = torch_const(qw_np), torch_const(ws_np)
    b_np = const_input(node, 3)
    b = torch_const(b_np) if b_np is not None else None
    xs, xz = _q(node, "x")
    out_u8 = node.attrs.get("out_dtype", "float32") == "uint8"
    ys, yz = _q(node, "y") if out_u8 else (1.0, 0)
    out_dt = torch.uint8 if out_u8 else torch.float32
    act_name = str(node.attrs.get("activation", ""))
    act, _, _, _ = make_activation(act_name, list(node.attrs.get("activation_params", [])))
    post = _LINEAR_POST.get(act_name)
    after: Any = None
    if post is None:
        if out_u8:
            raise unsupported(node, f"QGemm with activation {act_name} cannot write uint8")
        post, after = "none", act
    wp = torch.ops.onednn.qlinear_prepack(qw, None)
    wz = torch.zeros(qw.shape[0], dtype=torch.int64)
    lin = torch.ops.onednn.qlinear_pointwise
    few = _few_rows_gemv(qw_np, ws_np, b_np, xs, xz, act_name if after is None else "", out_u8, ys, yz)

    def kernel(x: torch.Tensor, _w: Any = None, _s: Any = None, _b: Any = None) -> torch.Tensor:
        if x.dtype != torch.uint8:
            x = quantize_u8(x.contiguous(), xs, xz)
        if few is not None and x.dim() >= 1 and x.shape[-1] == qw.shape[1] and \
                0 < x.numel() <= GEMV_ROWS * qw.shape[1]:
            rows, n = x.numel() // qw.shape[1], qw.shape[0]
            y = few(x.contiguous().view(rows, -1, 1, 1)).view(*x.shape[:-1], n)  # 1x1 conv over rows
        else:
            y = lin(x.contiguous(), xs, xz, wp, ws, wz, b, ys, yz, out_dt, post, [], "")
        return after(y) if after is not None else y

    def plan(x: torch.Tensor, _w: Any = None, _s: Any = None, _b: Any = None) -> NativeCall | None:
        if few is None or after is not None or x.dtype != torch.uint8 or not x.is_contiguous() or x.dim() < 1 \
                or x.shape[-1] != qw.shape[1] or not 0 < x.numel() <= GEMV_ROWS * qw.shape[1]:
            return None
        call = few.plan(x.view(x.numel() // qw.shape[1], -1, 1, 1))
        return None if call is None else call._replace(out=call.out.view(*x.shape[:-1], qw.shape[0]))

    kernel.plan = plan  # type: ignore[attr-defined]
    return kernel


GEMV_ROWS = 4  # QGemm with at most this many rows runs on the direct int8 kernel


def _few_rows_gemv(qw: Any, ws: Any, b: Any, xs: float, xz: int, act: str, out_u8: bool, ys: float,
                   yz: int) -> Any:
    """QGemm at 1-4 rows as a 1x1 direct int8 convolution over the rows: measured 60 µs vs 410 µs
    through oneDNN's qlinear for ResNet-50's 2048 → 1000 layer (warm; its call costs ≈ 80 µs and the
    rest is a per-call weight pass). None where the kernel cannot run it."""
    from tensorkiln.backends.cpu.native import qdirectconv

    if qw.ndim != 2 or qw.dtype != np.int8 or act not in ("", "Relu") or not qdirectconv.available():
        return None
    if int(np.abs(qw.astype(np.int32)).max(initial=0)) > qdirectconv.MAX_W:
        return None
    return qdirectconv.QDirectConv(qw.reshape(*qw.shape, 1, 1), np.asarray(ws).reshape(-1), b, xs, xz, [1, 1],
                                   [0, 0, 0, 0], [1, 1], act, [], out_u8, ys, yz)


def dynamic_qgemm(node: Node, ctx: BuildContext) -> Kernel:
    """Dynamic quantization: int8 weights (per output channel), the input quantized per call to
    uint8 over its own [min, max] (with 0), float32 output."""
    qw_np, ws_np = const_input(node, 1), const_input(node, 2)
    if qw_np is None or ws_np is None:
        raise unsupported(node, "DynQGemm needs constant int8 weights and scales")
    qw, ws = torch_const(qw_np), torch_const(ws_np)
    b_np = const_input(node, 3)
    b = torch_const(b_np) if b_np is not None else None
    act_name = str(node.attrs.get("activation", ""))
    act, _, _, _ = make_activation(act_name, list(node.attrs.get("activation_params", [])))
    post = _LINEAR_POST.get(act_name)
    after = None if post is not None else act
    post = post or "none"
    wp = torch.ops.onednn.qlinear_prepack(qw, None)
    wz = torch.zeros(qw.shape[0], dtype=torch.int64)
    lin = torch.ops.onednn.qlinear_pointwise

    def kernel(x: torch.Tensor, _w: Any = None, _s: Any = None, _b: Any = None) -> torch.Tensor:
        if x.dtype != torch.float32:
            x = x.float()
        x = x.contiguous()
        mn, mx = torch.aminmax(x)
        lo, hi = min(float(mn), 0.0), max(float(mx), 0.0)
        scale = (hi - lo) / 255.0 if hi > lo else 1.0
        zp = min(max(round(-lo / scale), 0), 255)
        y = lin(quantize_u8(x, scale, zp), scale, zp, wp, ws, wz, b, 1.0, 0, torch.float32, post, [], "")
        return after(y) if after is not None else y

    return kernel


def quantize(node: Node, ctx: BuildContext) -> Kernel:
    s, z = _q(node, "y")

    def plan(x: torch.Tensor) -> NativeCall | None:
        return native_quant.quantize(x, s, z)

    def kernel(x: torch.Tensor) -> torch.Tensor:
        call = plan(x)  # dense float32: quant.c (the same arithmetic)
        return native_chain.run(call) if call is not None else quantize_u8(x, s, z)

    kernel.plan = plan  # type: ignore[attr-defined]
    return kernel


def dequantize(node: Node, ctx: BuildContext) -> Kernel:
    s, z = _q(node, "x")

    def plan(x: torch.Tensor) -> NativeCall | None:
        return native_quant.dequantize(x, s, z)

    def kernel(x: torch.Tensor) -> torch.Tensor:
        call = plan(x)
        return native_chain.run(call) if call is not None else dequantize_u8(x, s, z)

    kernel.plan = plan  # type: ignore[attr-defined]
    return kernel


def qglobalavgpool(node: Node, ctx: BuildContext) -> Kernel:
    """Q(GlobalAveragePool(DQ(x))) on uint8 codes: the exact integer sum per channel, then
    round_half_even((sum - HW * xz) * xs / (HW * ys)) + yz, saturated (or the float value for a
    float32 output). The model's float mean can differ from the exact one by a rounding, so a code
    can differ by one where the value falls on a rounding boundary."""
    xs, xz = _q(node, "x")
    out_u8 = node.attrs.get("out_dtype", "uint8") == "uint8"
    ys, yz = _q(node, "y") if out_u8 else (1.0, 0)

    def multiplier(hw: int) -> float:
        return float(np.float32(xs / (hw * ys)))

    def plan(x: torch.Tensor) -> NativeCall | None:
        if x.dim() != 4:
            return None
        return native_quant.global_avg_pool(x, xz, multiplier(x.shape[2] * x.shape[3]), yz, out_u8)

    def kernel(x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.uint8 or x.dim() < 3:
            raise ValueError(f"expected uint8 codes [N, C, spatial...], got {x.dtype} {tuple(x.shape)}")
        call = plan(x)
        if call is not None:
            return native_chain.run(call)
        hw = int(np.prod(x.shape[2:]))
        acc = x.to(torch.int32).sum(dim=tuple(range(2, x.dim())), keepdim=True) - hw * xz
        f = acc.to(torch.float32) * torch.tensor(multiplier(hw), dtype=torch.float32)
        return f.round_().add_(yz).clamp_(0, 255).to(torch.uint8) if out_u8 else f

    kernel.plan = plan  # type: ignore[attr-defined]
    return kernel


def qmaxpool(node: Node, ctx: BuildContext) -> Kernel:
    """Max pooling on uint8 codes: the maximum of the window's shifted strided views. Padding with
    code 0 never wins (every window holds a real element, and codes are >= 0)."""
    ks = [int(k) for k in node.attrs["kernel_shape"]]
    strides = [int(s) for s in node.attrs.get("strides", [1, 1])]
    pads = [int(p) for p in node.attrs.get("pads", [0, 0, 0, 0])]
    dil = [int(d) for d in node.attrs.get("dilations", [1, 1])]
    if len(ks) != 2 or pads[:2] != pads[2:] or int(node.attrs.get("ceil_mode", 0)):
        raise unsupported(node, "QMaxPool takes 2-D windows with symmetric pads and ceil_mode=0")
    (kh, kw), (sh, sw), (dh, dw) = ks, strides, dil
    pad = [pads[1], pads[1], pads[0], pads[0]]
    maximum = torch.maximum
    from tensorkiln.backends.cpu.native import pool as native_pool

    native = native_pool.available()

    def plan(x: torch.Tensor) -> NativeCall | None:
        if native and x.dim() == 4 and x.dtype == torch.uint8 and x.is_contiguous(memory_format=CL):
            ho = (x.shape[2] + 2 * pads[0] - dh * (kh - 1) - 1) // sh + 1
            wo = (x.shape[3] + 2 * pads[1] - dw * (kw - 1) - 1) // sw + 1
            if ho > 0 and wo > 0:  # pool.c: 32 channels per register
                return native_pool.maxpool2d_plan(x, ks, strides, pads[:2], dil, (ho, wo))
        return None

    def kernel(x: torch.Tensor) -> torch.Tensor:
        call = plan(x) or (plan(x.contiguous(memory_format=CL)) if x.dim() == 4 else None)
        if call is not None:
            return native_chain.run(call)
        if pads[0] or pads[1]:
            x = F.pad(x, pad)
        ho = (x.shape[2] - dh * (kh - 1) - 1) // sh + 1
        wo = (x.shape[3] - dw * (kw - 1) - 1) // sw + 1
        out: torch.Tensor | None = None
        for i in range(kh):
            for j in range(kw):
                v = x[:, :, i * dh: i * dh + sh * (ho - 1) + 1: sh, j * dw: j * dw + sw * (wo - 1) + 1: sw]
                if out is None:
                    out = v.clone(memory_format=CL)
                else:
                    maximum(out, v, out=out)
        assert out is not None
        return out

    if native:
        kernel.plan = plan  # type: ignore[attr-defined]
    return kernel


KERNELS: dict[str, Factory] = {
    "tensorkiln::QConv": qconv,
    "tensorkiln::QGemm": qgemm,
    "tensorkiln::DynQGemm": dynamic_qgemm,
    "tensorkiln::Quantize": quantize,
    "tensorkiln::Dequantize": dequantize,
    "tensorkiln::QMaxPool": qmaxpool,
    "tensorkiln::QGlobalAveragePool": qglobalavgpool,
}
