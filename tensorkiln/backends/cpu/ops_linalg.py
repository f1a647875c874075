"""CPU kernels: MatMul, Gemm, Einsum, Det."""

from __future__ import annotations

import re

import torch

from tensorkiln.backends.cpu.base import BuildContext, Factory, Kernel, attr, has_input, unsupported
from tensorkiln.backends.cpu.ops_elementwise import in_dtype, widen
from tensorkiln.ir import Node

Tensor = torch.Tensor


def _matmul(node: Node, ctx: BuildContext) -> Kernel:
    return widen(node, torch.matmul)


def _gemm(node: Node, ctx: BuildContext) -> Kernel:
    alpha = float(attr(node, "alpha", 1.0))
    beta = float(attr(node, "beta", 1.0))
    ta = bool(attr(node, "transA", 0))
    tb = bool(attr(node, "transB", 0))
    with_c = has_input(node, 2) and beta != 0.0
    dt = in_dtype(node)

    def operands(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        if a.dim() != 2 or b.dim() != 2:
            raise ValueError(f"Gemm needs 2-D A and B, got shapes {tuple(a.shape)}, {tuple(b.shape)}")
        return (a.t() if ta else a), (b.t() if tb else b)

    def float_gemm(a: Tensor, b: Tensor, c: Tensor | None = None) -> Tensor:
        a, b = operands(a, b)
        if with_c and c is not None:
            return torch.addmm(c, a, b, beta=beta, alpha=alpha)
        y = torch.mm(a, b)
        return y if alpha == 1.0 else y * alpha

    def int_gemm(a: Tensor, b: Tensor, c: Tensor | None = None) -> Tensor:
        a, b = operands(a, b)
        y = torch.mm(a, b)
        if not with_c or c is None:
            return y if alpha == 1.0 else (y.double() * alpha).to(a.dtype)
        if alpha == 1.0 and beta == 1.0:
            return y + c
        return (y.double() * alpha + c.double() * beta).to(a.dtype)

    if dt is not None:
        return float_gemm if dt.is_floating_point else widen(node, int_gemm)
    return widen(node, lambda a, b, c=None: (float_gemm if a.is_floating_point() else int_gemm)(a, b, c))


def _einsum(node: Node, ctx: BuildContext) -> Kernel:
    eq = re.sub(r"\s+", "", str(attr(node, "equation", "")))
    if not eq:
        raise unsupported(node, "empty equation")

    def k(*xs: Tensor) -> Tensor:
        return torch.einsum(eq, *xs)

    return widen(node, k)


def _det(node: Node, ctx: BuildContext) -> Kernel:
    def k(x: Tensor) -> Tensor:
        if x.dtype in (torch.float32, torch.float64):
            return torch.linalg.det(x)
        return torch.linalg.det(x.float()).to(x.dtype)

    return k


KERNELS: dict[str, Factory] = {
    "MatMul": _matmul,
    "Gemm": _gemm,
    "Einsum": _einsum,
    "Det": _det,
}
