"""The CPU kernel contract.

A *factory* receives one ``ir.Node`` (attributes, opset, input/output values with
dtype/shape when known and ``const`` for constant inputs) and a ``BuildContext``; it
returns a *kernel*: a plain callable that takes the node's inputs as torch tensors
(``None`` for an absent optional input, in ONNX order, followed by any values captured by
subgraphs) and returns

* a ``torch.Tensor`` when the node has exactly one output, or
* a tuple/list with one tensor per node output otherwise.

Kernels must never modify their inputs in place, and must not keep references to
per-call tensors between calls. Everything that depends only on attributes and constants
is computed once in the factory, so the kernel does the minimum per call. A factory that
cannot handle an attribute combination raises ``UnsupportedOpError`` (via ``unsupported``);
the builder collects those for all nodes and reports them together.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from tensorkiln.errors import ModelError, UnsupportedOpError
from tensorkiln.ir import DType, Graph, Node

Kernel = Callable[..., Any]


class SubProgram(Protocol):
    """A compiled subgraph: inputs are the body's formal inputs then its captures."""

    n_inputs: int
    captures: list[Any]  # ir.Value objects, in the order the program expects them

    def __call__(self, inputs: Sequence[torch.Tensor | None]) -> list[torch.Tensor]: ...


@dataclass
class BuildContext:
    compile_subgraph: Callable[[Graph], SubProgram]


Factory = Callable[[Node, BuildContext], Kernel]


def unsupported(node: Node, what: str) -> UnsupportedOpError:
    return UnsupportedOpError(
        f"node {node.name!r} ({node.op_type}, opset {node.opset}): {what}"
    )


def bad_model(node: Node, what: str) -> ModelError:
    return ModelError(f"node {node.name!r} ({node.op_type}, opset {node.opset}): {what}")


def attr(node: Node, name: str, default: Any = None) -> Any:
    return node.attrs.get(name, default)


def const_input(node: Node, i: int) -> np.ndarray | None:
    """The value of input ``i`` when it is a constant, else None."""
    if i >= len(node.inputs):
        return None
    v = node.inputs[i]
    if v is None or v.const is None:
        return None
    return v.const


def has_input(node: Node, i: int) -> bool:
    n = node.attrs.get("_n_onnx_inputs", len(node.inputs))
    return i < n and node.inputs[i] is not None


def torch_const(arr: np.ndarray) -> torch.Tensor:
    """A torch tensor over a constant's memory (shared when the array is contiguous and writable,
    so weights are held once). Kernels never write into their inputs, so sharing is safe."""
    if arr.dtype == object:
        raise UnsupportedOpError("string tensors are not supported on the CPU backend")
    return torch.from_numpy(np.require(arr, requirements=["C", "W", "A"]))


def torch_dtype(dt: DType | str | int) -> torch.dtype:
    if isinstance(dt, int):
        dt = DType.from_onnx(dt)
    elif isinstance(dt, str):
        dt = DType.from_name(dt)
    return dt.to_torch()
