"""CPU kernels: activation operators, and Softmax/LogSoftmax/Hardmax.

Softmax, LogSoftmax and Hardmax before opset 13 coerce the input to 2-D at ``axis``
(default 1) and normalize over the whole second dimension; from opset 13 they work
along ``axis`` (default -1).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from tensorkiln.backends.cpu.base import BuildContext, Factory, Kernel, attr, unsupported
from tensorkiln.ir import Node

Tensor = torch.Tensor


def _fixed(fn: Callable[[Tensor], Tensor]) -> Factory:
    def factory(node: Node, ctx: BuildContext) -> Kernel:
        return fn

    return factory


def _leaky_relu(node: Node, ctx: BuildContext) -> Kernel:
    alpha = float(attr(node, "alpha", 0.01))
    return lambda x: F.leaky_relu(x, alpha)


def _prelu(node: Node, ctx: BuildContext) -> Kernel:
    # slope broadcasts unidirectionally to x (not torch's per-channel prelu)
    def k(x: Tensor, slope: Tensor) -> Tensor:
        return torch.where(x < 0, x * slope, x)

    return k


def _elu(node: Node, ctx: BuildContext) -> Kernel:
    alpha = float(attr(node, "alpha", 1.0))
    return lambda x: F.elu(x, alpha)


def _selu(node: Node, ctx: BuildContext) -> Kernel:
    alpha = float(attr(node, "alpha", 1.67326319217681884765625))
    gamma = float(attr(node, "gamma", 1.05070102214813232421875))
    return lambda x: F.elu(x, alpha) * gamma


def _celu(node: Node, ctx: BuildContext) -> Kernel:
    alpha = float(attr(node, "alpha", 1.0))
    return lambda x: F.celu(x, alpha)


def _hard_sigmoid(node: Node, ctx: BuildContext) -> Kernel:
    alpha = float(attr(node, "alpha", 0.2))
    beta = float(attr(node, "beta", 0.5))
    return lambda x: torch.clamp(x * alpha + beta, 0.0, 1.0)


def _gelu(node: Node, ctx: BuildContext) -> Kernel:
    approx = attr(node, "approximate", "none")
    if approx not in ("none", "tanh"):
        raise unsupported(node, f"approximate={approx!r} (expected 'none' or 'tanh')")
    return lambda x: F.gelu(x, approximate=approx)


def _thresholded_relu(node: Node, ctx: BuildContext) -> Kernel:
    alpha = float(attr(node, "alpha", 1.0))

    def k(x: Tensor) -> Tensor:
        return torch.where(x > alpha, x, torch.zeros((), dtype=x.dtype))

    return k


def _shrink(node: Node, ctx: BuildContext) -> Kernel:
    bias = float(attr(node, "bias", 0.0))
    lambd = float(attr(node, "lambd", 0.5))

    def k(x: Tensor) -> Tensor:
        if x.is_floating_point():
            zero = torch.zeros((), dtype=x.dtype)
            return torch.where(x < -lambd, x + bias, torch.where(x > lambd, x - bias, zero))
        xd = x.double()
        y = torch.where(xd < -lambd, xd + bias, torch.where(xd > lambd, xd - bias, 0.0))
        return y.to(x.dtype)

    return k


def _swish(node: Node, ctx: BuildContext) -> Kernel:
    alpha = float(attr(node, "alpha", 1.0))
    if alpha == 1.0:
        return F.silu
    return lambda x: x * torch.sigmoid(x * alpha)


def _softplus(x: Tensor) -> Tensor:
    return F.softplus(x)


# ------------------------------------------------------- Softmax family

def _hardmax_dim(x: Tensor, dim: int) -> Tensor:
    if x.numel() == 0:
        return x
    idx = torch.argmax(x, dim=dim, keepdim=True)  # first maximum on ties, as ONNX
    return torch.zeros_like(x).scatter_(dim, idx, 1)


def _softmax_dim(x: Tensor, dim: int) -> Tensor:
    if x.dtype != torch.float16:
        return torch.softmax(x, dim)
    # float16: round each step to float16 as ONNX's reference does (torch's fused kernel
    # rounds once, which is more exact but differs from the conformance data by ~2 ulp)
    e = torch.exp(x - x.amax(dim, keepdim=True))
    return e / e.sum(dim, keepdim=True)


def _log_softmax_dim(x: Tensor, dim: int) -> Tensor:
    if x.dtype != torch.float16:
        return torch.log_softmax(x, dim)
    t = x - x.amax(dim, keepdim=True)  # float16: step by step, as for Softmax
    return t - torch.log(torch.exp(t).sum(dim, keepdim=True))


def _along(fn: Callable[[Tensor, int], Tensor]) -> Factory:
    def factory(node: Node, ctx: BuildContext) -> Kernel:
        if node.opset >= 13:
            axis = int(attr(node, "axis", -1))

            def k(x: Tensor) -> Tensor:
                if x.dim() == 0:
                    return fn(x.reshape(1), 0).reshape(())
                return fn(x, axis)

            return k

        axis = int(attr(node, "axis", 1))

        def k2(x: Tensor) -> Tensor:
            r = x.dim()
            a = axis + r if axis < 0 else axis
            if not 0 <= a <= r:
                raise ValueError(f"axis {axis} is out of range for rank {r}")
            shape = x.shape
            rows = math.prod(shape[:a])
            y = fn(x.reshape(rows, math.prod(shape[a:])), 1)
            return y.reshape(shape)

        return k2

    return factory


KERNELS: dict[str, Factory] = {
    "Relu": _fixed(torch.relu),
    "LeakyRelu": _leaky_relu,
    "PRelu": _prelu,
    "Elu": _elu,
    "Selu": _selu,
    "Celu": _celu,
    "Sigmoid": _fixed(torch.sigmoid),
    "HardSigmoid": _hard_sigmoid,
    "HardSwish": _fixed(F.hardswish),
    "Softplus": _fixed(_softplus),
    "Softsign": _fixed(F.softsign),
    "Gelu": _gelu,
    "Mish": _fixed(F.mish),
    "ThresholdedRelu": _thresholded_relu,
    "Shrink": _shrink,
    "Swish": _swish,
    "Softmax": _along(_softmax_dim),
    "LogSoftmax": _along(_log_softmax_dim),
    "Hardmax": _along(_hardmax_dim),
}
