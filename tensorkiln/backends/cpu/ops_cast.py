"""CPU kernels: Cast and CastLike.

Conversions follow ATen's (= C's) rules, which are ONNX's: float → int truncates toward
zero, anything → bool is ``x != 0``, int → narrower int wraps. Float8, int4/uint4,
float4 and string element types have no CPU kernels here and are rejected at build time.
"""

from __future__ import annotations

import torch

from tensorkiln.backends.cpu.base import BuildContext, Factory, Kernel, attr, unsupported
from tensorkiln.errors import UnsupportedOpError
from tensorkiln.ir import DType, Node

Tensor = torch.Tensor


def _torch_type(node: Node, dt: DType | None, what: str) -> torch.dtype | None:
    if dt is None:
        return None
    try:
        return dt.to_torch()
    except UnsupportedOpError:
        raise unsupported(node, f"{what} element type {dt.short} is not supported") from None


def _convert(to: torch.dtype) -> Kernel:
    def k(x: Tensor, *_: Tensor | None) -> Tensor:
        return x if x.dtype == to else x.to(to)

    return k


def _cast(node: Node, ctx: BuildContext) -> Kernel:
    code = attr(node, "to")
    if code is None:
        raise unsupported(node, "missing the 'to' attribute")
    try:
        target = DType.from_onnx(int(code))
    except Exception:
        raise unsupported(node, f"unknown target type code {code}") from None
    to = _torch_type(node, target, "target")
    _torch_type(node, node.inputs[0].dtype if node.inputs[0] is not None else None, "source")
    assert to is not None
    return _convert(to)


def _cast_like(node: Node, ctx: BuildContext) -> Kernel:
    _torch_type(node, node.inputs[0].dtype if node.inputs[0] is not None else None, "source")
    like = node.inputs[1]
    to = _torch_type(node, like.dtype if like is not None else None, "target")
    if to is not None:
        return _convert(to)

    def k(x: Tensor, y: Tensor) -> Tensor:
        return x if x.dtype == y.dtype else x.to(y.dtype)

    return k


KERNELS: dict[str, Factory] = {
    "Cast": _cast,
    "CastLike": _cast_like,
}
