"""CPU kernels for tensorkiln's own fused ops (domain ``tensorkiln``), made by the passes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tensorkiln.backends.cpu.base import BuildContext, Factory, Kernel, const_input, torch_const, unsupported
from tensorkiln.backends.cpu.native.chain import NativeCall
from tensorkiln.ir import Node

# activation name → (python function, oneDNN post-op name, oneDNN scalars, oneDNN algorithm)
Act = Callable[[torch.Tensor], torch.Tensor]


def make_activation(name: str, params: list[float]) -> tuple[Act | None, str | None, list[Any], str | None]:
    if name == "":
        return None, None, [], None
    if name == "Relu":
        return torch.relu, "relu", [], None
    if name == "Clip":
        lo, hi = params
        return (lambda t: torch.clamp(t, lo, hi)), "hardtanh", [lo, hi], None
    if name == "LeakyRelu":
        (a,) = params
        return (lambda t: F.leaky_relu(t, a)), "leaky_relu", [a], None
    if name == "Sigmoid":
        return torch.sigmoid, "sigmoid", [], None
    if name == "Tanh":
        return torch.tanh, "tanh", [], None
    if name == "HardSwish":
        return F.hardswish, "hardswish", [], None
    if name == "HardSigmoid":
        alpha, beta = params
        return (lambda t: torch.clamp(t * alpha + beta, 0.0, 1.0)), None, [], None
    if name == "Gelu":
        return (lambda t: F.gelu(t)), "gelu", [], "none"
    if name == "GeluTanh":
        return (lambda t: F.gelu(t, approximate="tanh")), "gelu", [], "tanh"
    raise ValueError(f"unknown fused activation {name!r}")


def _conv_geometry(node: Node, w: torch.Tensor) -> tuple[list[int], list[int], list[int], int, list[int]]:
    k = list(w.shape[2:])
    nd = len(k)
    strides = list(node.attrs.get("strides", [1] * nd))
    dil = list(node.attrs.get("dilations", [1] * nd))
    group = int(node.attrs.get("group", 1))
    pads = list(node.attrs.get("pads", [0] * (2 * nd)))
    auto = node.attrs.get("auto_pad", "NOTSET")
    if auto not in ("NOTSET", "VALID", ""):
        raise unsupported(node, f"FusedConv with auto_pad={auto}")
    if auto == "VALID":
        pads = [0] * (2 * nd)
    return strides, dil, pads, group, k


def fused_conv(node: Node, ctx: BuildContext) -> Kernel:
    w_np = const_input(node, 1)
    if w_np is None:
        raise unsupported(node, "FusedConv needs a constant weight")
    w = torch_const(w_np)
    b_np = const_input(node, 2)
    b = torch_const(b_np) if b_np is not None else None
    strides, dil, pads, group, k = _conv_geometry(node, w)
    nd = len(k)
    act, post, scalars, algo = make_activation(node.attrs.get("activation", ""),
                                              list(node.attrs.get("activation_params", [])))
    symmetric = pads[:nd] == pads[nd:]
    pre_pad: list[int] | None = None
    if not symmetric:
        # F.pad takes (last dim begin, last dim end, …)
        pre_pad = []
        for i in reversed(range(nd)):
            pre_pad += [pads[i], pads[i + nd]]
        pads = [0] * (2 * nd)
    pad = pads[:nd]
    onednn_ok = nd == 2 and torch.backends.mkldnn.is_available() and (act is None or post is not None)
    tactic = node.attrs.get("tactic") or default_conv_tactic(node)
    if (tactic == winograd_tactic(node) and not _winograd_available()) or \
            (tactic == "gemm-1x1" and gemm1x1_ok(node) and not _gemm1x1_available()) or \
            (tactic in NATIVE_CONV_TACTICS and direct_ok(node) and not _direct_available()):
        # an engine tuned on a machine with a C compiler, loaded on one without: same math, direct;
        # the node records what runs, so the profile and a re-save say so
        tactic = default_conv_tactic(node)
        node.attrs["tactic"] = tactic
    if tactic not in CONV_TACTICS:
        raise unsupported(node, f"unknown FusedConv tactic {tactic!r}; tactics are {list(CONV_TACTICS)}")
    if tactic == "onednn-nhwc" and not onednn_ok:
        raise unsupported(node, "tactic onednn-nhwc needs a 2-D convolution with a oneDNN post-op activation")
    onednn = tactic == "onednn-nhwc"
    if onednn:
        # oneDNN picks the blocked weight format for a given input size; a weight packed for
        # another size is reordered on every call (measured 30x slower on a 7x7 layer) or runs a
        # worse algorithm (2x at batch 16 with a batch-1 packing), so pack once per input shape —
        # at build time when the shape is known, else on first use.
        packed: dict[tuple[int, ...], torch.Tensor] = {}

        def pack(shape: tuple[int, ...]) -> torch.Tensor:
            key = tuple(shape)
            wp = packed.get(key)
            if wp is not None:
                return wp
            if len(packed) >= 4:  # bound the memory: reuse a packing made for another batch size
                for k, v in packed.items():
                    if k[1:] == key[1:]:
                        return v
            wp = torch.ops.mkldnn._reorder_convolution_weight(w, pad, strides, dil, group, list(shape))
            if len(packed) < 8:
                packed[key] = wp
            return wp

        x_val = node.inputs[0]
        if x_val is not None and x_val.shape is not None and len(x_val.shape) == 4 and \
                all(isinstance(d, int) for d in x_val.shape[1:]) and pre_pad is None:
            batch = x_val.shape[0] if isinstance(x_val.shape[0], int) else 1
            pack((batch, *x_val.shape[1:]))  # type: ignore[arg-type]
        cl = torch.channels_last
        conv_pw = torch.ops.mkldnn._convolution_pointwise
        conv_bin = torch.ops.mkldnn._convolution_pointwise.binary
        conv_bin_ = torch.ops.mkldnn._convolution_pointwise_.binary
        inplace = bool(node.attrs.get("residual_inplace", False))
        unary = post or "none"

        def kernel(x: torch.Tensor, _w: Any = None, _b: Any = None, z: torch.Tensor | None = None) -> Any:
            if x.dtype != torch.float32:
                return _generic(x, z)
            if pre_pad is not None:
                x = F.pad(x, pre_pad)
            x = x.contiguous(memory_format=cl)
            wp = packed.get(tuple(x.shape))
            if wp is None:
                wp = pack(tuple(x.shape))
            if z is None:
                return conv_pw(x, wp, b, pad, strides, dil, group, unary, scalars, algo)
            if inplace and z.dtype == torch.float32 and z.is_contiguous(memory_format=cl) and z.dim() == 4:
                # z dies here (checked by the in-place pass): write the result into it
                return conv_bin_(z, x, wp, b, pad, strides, dil, group, "add", 1.0, post, scalars, algo)
            z = z.contiguous(memory_format=cl)
            if post is None:
                return conv_bin(x, z, wp, b, pad, strides, dil, group, "add", 1.0, None, [], None)
            return conv_bin(x, z, wp, b, pad, strides, dil, group, "add", 1.0, post, scalars, algo)

    def _generic(x: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        if pre_pad is not None:
            x = F.pad(x, pre_pad)
        y = torch.convolution(x, w.to(x.dtype), None if b is None else b.to(x.dtype), strides, pad, dil,
                              False, [0] * nd, group)
        if z is not None:
            y = y + z
        return act(y) if act is not None else y

    if onednn:
        return kernel
    if tactic in ("winograd-f43", "winograd-f25"):
        return _winograd_kernel(node, tactic, w_np, b_np, act, _generic)
    if tactic == "gemm-1x1":
        return _gemm1x1_kernel(node, w_np, b_np, act, _generic)
    if tactic in NATIVE_CONV_TACTICS:
        return _direct_kernel(node, w_np, b_np, act, _generic, tactic)

    if tactic == "aten-nhwc" and nd == 2:
        cl = torch.channels_last
        w_cl = w.contiguous(memory_format=cl)

        def nhwc_kernel(x: torch.Tensor, _w: Any = None, _b: Any = None,
                        z: torch.Tensor | None = None) -> torch.Tensor:
            if pre_pad is not None:
                x = F.pad(x, pre_pad)
            y = torch.convolution(x.contiguous(memory_format=cl), w_cl.to(x.dtype),
                                  None if b is None else b.to(x.dtype), strides, pad, dil, False, [0] * nd, group)
            if z is not None:
                y = y.add_(z)  # y is fresh: adding in place is safe
            return act(y) if act is not None else y

        return nhwc_kernel

    def generic_kernel(x: torch.Tensor, _w: Any = None, _b: Any = None,
                       z: torch.Tensor | None = None) -> torch.Tensor:
        return _generic(x.contiguous(), z)

    return generic_kernel


def _winograd_available() -> bool:
    from tensorkiln.backends.cpu.native import winograd

    return winograd.available()


def _gemm1x1_available() -> bool:
    from tensorkiln.backends.cpu.native import gemm1x1

    return gemm1x1.available()


def _direct_available() -> bool:
    from tensorkiln.backends.cpu.native import directconv

    return directconv.available()


def direct_ok(node: Node) -> bool:
    """A 2-D ungrouped convolution in the NHWC region (any kernel, stride, dilation, padding)."""
    w = node.inputs[1]
    if w is None or w.const is None or w.const.ndim != 4:
        return False
    if node.attrs.get("layout") != "nhwc" or node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID", ""):
        return False
    return int(node.attrs.get("group", 1)) == 1


def _plain_nhwc_conv(node: Node, kernel_hw: tuple[int, int], max_pad: int) -> bool:
    """A ``kernel_hw`` stride-1, dilation-1, ungrouped 2-D convolution in the NHWC region with
    pads of at most ``max_pad``."""
    w = node.inputs[1]
    if w is None or w.const is None or w.const.ndim != 4 or tuple(w.const.shape[2:]) != kernel_hw:
        return False
    if node.attrs.get("layout") != "nhwc" or node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", ""):
        return False
    if list(node.attrs.get("strides", [1, 1])) != [1, 1] or list(node.attrs.get("dilations", [1, 1])) != [1, 1]:
        return False
    pads = list(node.attrs.get("pads", [0] * 4))
    return int(node.attrs.get("group", 1)) == 1 and all(0 <= p <= max_pad for p in pads)


WINOGRAD_TACTICS = {3: "winograd-f43", 5: "winograd-f25"}  # kernel size → tactic


def winograd_tactic(node: Node) -> str | None:
    """``winograd-f43`` for a plain 3x3 NHWC conv, ``winograd-f25`` for a 5x5 one, else None."""
    for r, tactic in WINOGRAD_TACTICS.items():
        if _plain_nhwc_conv(node, (r, r), max_pad=r - 1):
            return tactic
    return None


def gemm1x1_ok(node: Node) -> bool:
    return _plain_nhwc_conv(node, (1, 1), max_pad=0)


ConvCall = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


def _native_kernel(node: Node, tactic: str, library: str, make: Callable[[str], ConvCall], act: Act | None,
                   generic: ConvCall) -> Kernel:
    """A conv tactic on the native kernels: ``make(fused activation)`` prepares it; activations
    the kernel cannot fuse run after it; non-float32 runs go to ATen."""
    from tensorkiln.backends.cpu.native import ACT_CODES, why_unavailable

    a = str(node.attrs.get("activation", ""))
    fused_act = a if a in ACT_CODES else ""
    try:
        conv = make(fused_act)
    except RuntimeError:
        raise unsupported(node, f"tactic {tactic} is unavailable: {why_unavailable(library)}") from None
    after = act if fused_act == "" else None

    def kernel(x: torch.Tensor, _w: Any = None, _b: Any = None, z: torch.Tensor | None = None) -> torch.Tensor:
        if x.dtype != torch.float32 or (z is not None and z.dtype != torch.float32):
            return generic(x, z)  # fp16/bf16 runs: ATen
        y = conv(x, z)
        return after(y) if after is not None else y

    conv_plan = getattr(conv, "plan", None)
    if conv_plan is not None and after is None:
        def plan(x: torch.Tensor, _w: Any = None, _b: Any = None, z: torch.Tensor | None = None) -> Any:
            if x.dtype != torch.float32 or (z is not None and z.dtype != torch.float32):
                return None
            return conv_plan(x, z)

        kernel.plan = plan  # type: ignore[attr-defined]
    return kernel


def _winograd_kernel(node: Node, tactic: str, w_np: Any, b_np: Any, act: Act | None, generic: ConvCall) -> Kernel:
    from tensorkiln.backends.cpu.native.winograd import Winograd

    if winograd_tactic(node) != tactic:
        raise unsupported(node, f"tactic {tactic} needs a stride-1 ungrouped NHWC convolution with a "
                                f"{'3x3' if tactic == 'winograd-f43' else '5x5'} kernel")
    pads = [int(p) for p in node.attrs.get("pads", [0, 0, 0, 0])]
    params = list(node.attrs.get("activation_params", []))
    return _native_kernel(node, tactic, "winograd", lambda fa: Winograd(w_np, b_np, pads, fa, params),
                          act, generic)


def _gemm1x1_kernel(node: Node, w_np: Any, b_np: Any, act: Act | None, generic: ConvCall) -> Kernel:
    from tensorkiln.backends.cpu.native.gemm1x1 import Gemm1x1

    if not gemm1x1_ok(node):
        raise unsupported(node, "tactic gemm-1x1 needs a 1x1 stride-1 unpadded ungrouped NHWC convolution")
    params = list(node.attrs.get("activation_params", []))
    inplace = bool(node.attrs.get("residual_inplace", False))
    return _native_kernel(node, "gemm-1x1", "eltwise", lambda fa: Gemm1x1(w_np, b_np, fa, params, inplace=inplace),
                          act, generic)


def _direct_kernel(node: Node, w_np: Any, b_np: Any, act: Act | None, generic: ConvCall, tactic: str) -> Kernel:
    from tensorkiln.backends.cpu.native.directconv import DirectConv, Im2ColConv, RowsConv

    ok, cls, needs = {"direct-nhwc": (direct_ok, DirectConv, ""),
                      "im2col-nhwc": (im2col_ok, Im2ColConv, " over < 16 channels"),
                      "rows-nhwc": (rows_ok, RowsConv, " over < 16 channels, dilation 1 along W")}[tactic]
    if not ok(node):
        raise unsupported(node, f"tactic {tactic} needs an ungrouped 2-D NHWC convolution{needs}")
    strides, dil, pads, _, _ = _conv_geometry(node, torch.from_numpy(w_np))
    params = list(node.attrs.get("activation_params", []))
    inplace = bool(node.attrs.get("residual_inplace", False))
    return _native_kernel(node, tactic, "directconv",
                          lambda fa: cls(w_np, b_np, strides, pads, dil, fa, params, inplace=inplace),
                          act, generic)


# tactic id → version; a version bump invalidates timing-cache entries of that tactic
# (aten-nchw v2: timed with the reorder to NHWC that its consumers in the channels-last region pay)
# (direct-nhwc v5, native-gemv v2: timed as their native call alone, as they run inside chains;
#  direct-nhwc v6, im2col-nhwc v2: tap pointers once per tile)
# (winograd-f43/f25 v3: one native call, groups of tiles through L2 or output channels split, in chains)
CONV_TACTICS = {"onednn-nhwc": 1, "aten-nhwc": 1, "aten-nchw": 2, "winograd-f43": 3, "winograd-f25": 3,
                "gemm-1x1": 1, "direct-nhwc": 6, "im2col-nhwc": 2, "rows-nhwc": 1}
NATIVE_CONV_TACTICS = ("direct-nhwc", "im2col-nhwc", "rows-nhwc")  # directconv.c
GEMM_TACTICS = {"aten-linear": 1, "onednn-linear": 1, "native-gemv": 2}
CHAINED_TACTICS = frozenset({*NATIVE_CONV_TACTICS, "winograd-f43", "winograd-f25", "native-gemv"})  # run in chains
IM2COL_MAX = 1024  # input channels x taps up to which a convolution over < 16 channels offers im2col-nhwc


def im2col_ok(node: Node) -> bool:
    """direct_ok, over fewer than 16 input channels, with a kernel larger than 1x1 (a stem)."""
    w = node.inputs[1]
    if not direct_ok(node) or w is None or w.const is None:
        return False
    c, kh, kw = (int(d) for d in w.const.shape[1:])
    return c < 16 and kh * kw > 1 and c * kh * kw <= IM2COL_MAX


def rows_ok(node: Node) -> bool:
    """im2col_ok, with dilation 1 along W (a kernel row is contiguous in NHWC)."""
    return im2col_ok(node) and int(list(node.attrs.get("dilations", [1, 1]))[-1]) == 1


def default_conv_tactic(node: Node) -> str:
    """The heuristic choice (optimization level 0, and the autotuner's incumbent): in the NHWC region
    our direct kernel where it can run (with an activation it fuses: its steps then run inside
    chains), else oneDNN NHWC; ATen NCHW elsewhere. Measured on ResNet-50 fp32 with chains (whole
    engines, interleaved): every convolution on direct-nhwc 0.87x the time of every one on oneDNN."""
    from tensorkiln.backends.cpu.native import ACT_CODES

    if direct_ok(node) and node.attrs.get("activation", "") in ACT_CODES and _direct_available():
        return "rows-nhwc" if rows_ok(node) else "im2col-nhwc" if im2col_ok(node) else "direct-nhwc"
    return "onednn-nhwc" if _onednn_ok(node) else "aten-nchw"


def default_gemm_tactic(node: Node) -> str:
    """The heuristic for FusedGemm: the native kernel where it can run (it takes 1-4 rows and hands
    larger batches to BLAS, and runs inside chains; ResNet-50's classifier at batch 1: 0.62 ms vs
    1.00 through ATen), else ATen."""
    return "native-gemv" if _gemv_ok(node) and _gemv_available() else "aten-linear"


def _onednn_ok(node: Node) -> bool:
    """oneDNN NHWC can run it: a 2-D convolution in the NHWC region with an activation it fuses."""
    w = node.inputs[1]
    nd = (w.const.ndim - 2) if w is not None and w.const is not None else 0
    act = node.attrs.get("activation", "")
    post_ok = act in ("", "Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "HardSwish", "Gelu", "GeluTanh")
    return node.attrs.get("layout") == "nhwc" and nd == 2 and post_ok and torch.backends.mkldnn.is_available()


def tactics_for(node: Node) -> dict[str, int]:
    """Tactics that can run ``node`` (for the autotuner); empty when it has no choices."""
    if node.domain != "tensorkiln":
        return {}
    if node.op_type == "FusedConv":
        w = node.inputs[1]
        nd = (w.const.ndim - 2) if w is not None and w.const is not None else 0
        out = {"aten-nchw": CONV_TACTICS["aten-nchw"]}
        if nd == 2 and node.attrs.get("layout") == "nhwc":  # layout=False keeps every conv NCHW
            out["aten-nhwc"] = CONV_TACTICS["aten-nhwc"]
            if _onednn_ok(_with_layout(node)):
                out["onednn-nhwc"] = CONV_TACTICS["onednn-nhwc"]
            wino = winograd_tactic(node)
            if wino is not None and _winograd_available():
                out[wino] = CONV_TACTICS[wino]
            if gemm1x1_ok(node) and _gemm1x1_available():
                out["gemm-1x1"] = CONV_TACTICS["gemm-1x1"]
            if direct_ok(node) and _direct_available():
                out["direct-nhwc"] = CONV_TACTICS["direct-nhwc"]
                if im2col_ok(node):
                    out["im2col-nhwc"] = CONV_TACTICS["im2col-nhwc"]
                if rows_ok(node):
                    out["rows-nhwc"] = CONV_TACTICS["rows-nhwc"]
        return out
    if node.op_type == "QConv":
        from tensorkiln.backends.cpu.ops_int8 import qconv_tactics

        return qconv_tactics(node)
    if node.op_type == "FusedGemm":
        out = {k: v for k, v in GEMM_TACTICS.items() if k != "native-gemv"}
        if _gemv_ok(node) and _gemv_available():
            out["native-gemv"] = GEMM_TACTICS["native-gemv"]
        return out
    return {}


def _gemv_available() -> bool:
    from tensorkiln.backends.cpu.native import gemv

    return gemv.available()


def _gemv_ok(node: Node) -> bool:
    """A 2-D float weight and a bias of one value per output, [N] or [1, N] (or none)."""
    w, b = node.inputs[1], (node.inputs[2] if len(node.inputs) > 2 else None)
    if w is None or w.const is None or w.const.ndim != 2 or w.const.dtype != np.float32:
        return False
    if b is None:
        return True
    n = w.const.shape[0]
    return b.const is not None and (b.const.shape == (n,) or b.const.shape == (1, n))


def _with_layout(node: Node) -> Node:
    import copy

    n = copy.copy(node)
    n.attrs = {**node.attrs, "layout": "nhwc"}
    return n


def fused_gemm(node: Node, ctx: BuildContext) -> Kernel:
    w_np = const_input(node, 1)
    if w_np is None:
        raise unsupported(node, "FusedGemm needs a constant weight")
    w = torch_const(w_np)
    b_np = const_input(node, 2)
    b = torch_const(b_np) if b_np is not None else None
    act, post, scalars, algo = make_activation(node.attrs.get("activation", ""),
                                               list(node.attrs.get("activation_params", [])))
    linear = F.linear
    tactic = node.attrs.get("tactic") or default_gemm_tactic(node)
    if tactic == "native-gemv" and not (_gemv_ok(node) and _gemv_available()):
        tactic = node.attrs["tactic"] = "aten-linear"  # tuned where a C compiler was; same math
    if tactic not in GEMM_TACTICS:
        raise unsupported(node, f"unknown FusedGemm tactic {tactic!r}; tactics are {list(GEMM_TACTICS)}")
    if tactic == "native-gemv":
        return _gemv_kernel(node, w_np, b_np, act, w, b)
    if tactic == "onednn-linear" and torch.backends.mkldnn.is_available():
        lin_pw = torch.ops.mkldnn._linear_pointwise
        attr = post or "none"

        def onednn_kernel(x: torch.Tensor, _w: Any = None, _b: Any = None) -> torch.Tensor:
            if x.dtype != torch.float32:
                y = linear(x, w.to(x.dtype), None if b is None else b.to(x.dtype))
                return act(y) if act is not None else y
            y = lin_pw(x.contiguous(), w, b, attr, scalars, algo)
            return act(y) if (act is not None and post is None) else y

        return onednn_kernel

    if act is None:
        def kernel(x: torch.Tensor, _w: Any = None, _b: Any = None) -> torch.Tensor:
            return linear(x, w, b)
        return kernel

    def kernel_act(x: torch.Tensor, _w: Any = None, _b: Any = None) -> torch.Tensor:
        return act(linear(x, w, b))

    return kernel_act


def _gemv_kernel(node: Node, w_np: Any, b_np: Any, act: Act | None, w: torch.Tensor,
                 b: torch.Tensor | None) -> Kernel:
    from tensorkiln.backends.cpu.native import ACT_CODES
    from tensorkiln.backends.cpu.native.gemv import MAX_ROWS, Gemv

    a = str(node.attrs.get("activation", ""))
    fused = a if a in ACT_CODES else ""
    gemv = Gemv(w_np, None if b_np is None else np.asarray(b_np).reshape(-1), fused,
                list(node.attrs.get("activation_params", [])))
    after = act if fused == "" else None

    def kernel(x: torch.Tensor, _w: Any = None, _b: Any = None) -> torch.Tensor:
        rows = gemv.rows(x)
        if x.dtype != torch.float32 or not 0 < rows <= MAX_ROWS:  # larger batches: BLAS
            y = F.linear(x, w.to(x.dtype), None if b is None else b.to(x.dtype))
            return act(y) if act is not None else y
        y = gemv(x)
        return after(y) if after is not None else y

    if after is None:
        kernel.plan = lambda x, _w=None, _b=None: gemv.plan(x)  # type: ignore[attr-defined]
    return kernel


def gelu(node: Node, ctx: BuildContext) -> Kernel:
    approx = str(node.attrs.get("approximate", "none"))

    def kernel(x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate=approx)

    return kernel


def layer_norm(node: Node, ctx: BuildContext) -> Kernel:
    eps = float(node.attrs.get("epsilon", 1e-5))
    g_np, b_np = const_input(node, 1), const_input(node, 2)
    gamma = torch_const(g_np) if g_np is not None else None
    beta = torch_const(b_np) if b_np is not None else None

    def kernel(x: torch.Tensor, _g: Any = None, _b: Any = None) -> torch.Tensor:
        n = x.shape[-1]
        g = gamma if gamma is None or gamma.numel() == n else None
        b = beta if beta is None or beta.numel() == n else None
        y = F.layer_norm(x, (n,), None if g is None else g.reshape(n), None if b is None else b.reshape(n), eps)
        if gamma is not None and g is None:
            y = y * gamma
        if beta is not None and b is None:
            y = y + beta
        return y

    return kernel


def _softmax_exact(s: torch.Tensor, axis: int, opset: int) -> torch.Tensor:
    """Softmax with the ONNX semantics of the model's opset (before 13: flatten at ``axis``)."""
    if opset >= 13:
        return torch.softmax(s, dim=axis)
    a = axis % s.dim()
    flat = s.reshape(int(torch.tensor(s.shape[:a]).prod()) if a else 1, -1)
    return torch.softmax(flat, dim=1).reshape(s.shape)


def attention(node: Node, ctx: BuildContext) -> Kernel:
    scale = float(node.attrs.get("scale", 1.0))
    axis = int(node.attrs.get("softmax_axis", -1))
    opset = int(node.attrs.get("softmax_opset", 13))
    sdpa = F.scaled_dot_product_attention

    def kernel(q: torch.Tensor, kt: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
               ) -> torch.Tensor:
        last = axis == -1 or axis == q.dim() - 1
        if not last or q.dim() != kt.dim() or q.dim() != v.dim():
            s = torch.matmul(q, kt) * scale
            if mask is not None:
                s = s + mask
            return torch.matmul(_softmax_exact(s, axis, opset), v)
        if (mask is not None and (mask.dtype != q.dtype or mask.dim() < 2)) or q.dim() < 3 or kt.dim() < 3:
            # an additive mask of another dtype: compute exactly as the graph did
            s = torch.matmul(q, kt) * scale + mask
            return torch.matmul(torch.softmax(s, dim=-1), v)
        return sdpa(q, kt.transpose(-2, -1), v, attn_mask=mask, scale=scale)

    return kernel


_INPLACE_UNARY = {"Relu": torch.relu_, "Sigmoid": torch.sigmoid_, "Tanh": torch.tanh_, "Neg": torch.neg_,
                  "Exp": torch.exp_, "Abs": torch.abs_, "Sqrt": torch.sqrt_, "Erf": torch.erf_,
                  "Reciprocal": torch.reciprocal_, "Ceil": torch.ceil_, "Floor": torch.floor_}
_INPLACE_BINARY = {"Add": (torch.Tensor.add_, torch.add), "Sub": (torch.Tensor.sub_, torch.sub),
                   "Mul": (torch.Tensor.mul_, torch.mul), "Div": (torch.Tensor.div_, torch.div)}


def inplace(node: Node, ctx: BuildContext) -> Kernel:
    """An elementwise op writing into its first input, which the pass proved dies here."""
    op = str(node.attrs["op"])
    if op in _INPLACE_UNARY:
        fn = _INPLACE_UNARY[op]

        def unary(x: torch.Tensor) -> torch.Tensor:
            return fn(x) if x.is_floating_point() else _out_of_place(op, x)

        return unary
    in_place, out_of_place = _INPLACE_BINARY[op]

    def binary(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.dtype == b.dtype and a.is_floating_point() and b.dim() <= a.dim() and \
                all(db == 1 or db == da for da, db in zip(a.shape[a.dim() - b.dim():], b.shape)):
            return in_place(a, b)  # the result has a's shape: it fits in a
        return out_of_place(a, b)

    return binary


def _out_of_place(op: str, x: torch.Tensor) -> torch.Tensor:
    return getattr(torch, op.lower() if op != "Erf" else "erf")(x)


def split_channels(node: Node, ctx: BuildContext) -> Kernel:
    sizes = [int(x) for x in node.attrs["sizes"]]

    def kernel(y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return torch.split(y, sizes, dim=1)  # views, no copies

    def plan(y: torch.Tensor) -> NativeCall:
        """Views, no call: chains run through the split (the direct kernels read channel slices)."""
        return NativeCall(kernel(y), None, [])

    kernel.plan = plan  # type: ignore[attr-defined]
    return kernel


KERNELS: dict[str, Factory] = {
    "tensorkiln::SplitChannels": split_channels,
    "tensorkiln::Inplace": inplace,
    "tensorkiln::FusedConv": fused_conv,
    "tensorkiln::FusedGemm": fused_gemm,
    "tensorkiln::Gelu": gelu,
    "tensorkiln::LayerNorm": layer_norm,
    "tensorkiln::Attention": attention,
}
