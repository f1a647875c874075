"""The intermediate representation: Graph, Node, Value.

A ``Value`` is one tensor: its producer node (``None`` for graph inputs and constants),
its uses, element type and shape (dims are ints, symbolic names, or ``None`` when
unknown). A constant (an ONNX initializer or a folded tensor) carries ``const``.

A ``Node`` is one operator application. ``opset`` is the version of the operator's
domain the model imports, so kernels can follow the semantics of that version.
Subgraphs (If/Loop/Scan bodies) are full ``Graph`` objects in ``Node.subgraphs``;
every value a body reads from an enclosing scope is listed in ``Graph.captures`` and
is also an explicit input of the owning node (after its ONNX inputs), so nothing is
ever resolved by name at run time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tensorkiln.ir.dtypes import DType

Dim = int | str | None
Shape = tuple[Dim, ...]


class Value:
    """One tensor in a graph."""

    __slots__ = ("const", "dtype", "name", "producer", "shape", "uses")

    def __init__(
        self,
        name: str,
        dtype: DType | None = None,
        shape: Shape | None = None,
        const: np.ndarray | None = None,
    ) -> None:
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.producer: Node | None = None
        self.uses: list[tuple[Node, int]] = []
        self.const = const
        if const is not None:
            if dtype is None:
                self.dtype = DType.from_numpy(const.dtype)
            if shape is None:
                self.shape = tuple(int(d) for d in const.shape)

    @property
    def is_const(self) -> bool:
        return self.const is not None

    def __repr__(self) -> str:
        return f"Value({self.name!r}, {self.type_str()})"

    def type_str(self) -> str:
        dt = self.dtype.short if self.dtype else "?"
        if self.shape is None:
            return f"{dt}[?]"
        dims = ",".join("?" if d is None else str(d) for d in self.shape)
        return f"{dt}[{dims}]"


@dataclass(eq=False)
class Node:
    """One operator application."""

    op_type: str
    inputs: list[Value | None]
    outputs: list[Value]
    attrs: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    domain: str = ""
    opset: int = 0
    subgraphs: dict[str, Graph] = field(default_factory=dict)
    # ONNX nodes this node stands for (after fusion more than one)
    origin: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"Node({self.op_type}, {self.name!r})"

    @property
    def qualified_op(self) -> str:
        return f"{self.domain}::{self.op_type}" if self.domain else self.op_type


class Graph:
    """A graph of nodes in topological order."""

    def __init__(self, name: str = "graph") -> None:
        self.name = name
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        self.nodes: list[Node] = []
        self.constants: dict[str, Value] = {}
        # values from enclosing scopes this (sub)graph reads, in a fixed order
        self.captures: list[Value] = []
        self.opset_imports: dict[str, int] = {}
        self._names: set[str] = set()

    # ---- construction -------------------------------------------------
    def add_input(self, value: Value) -> Value:
        self.inputs.append(value)
        self._names.add(value.name)
        return value

    def add_constant(self, name: str, array: np.ndarray) -> Value:
        v = Value(name, const=np.asarray(array))
        self.constants[name] = v
        self._names.add(name)
        return v

    def add_node(self, node: Node) -> Node:
        for i, v in enumerate(node.inputs):
            if v is not None:
                v.uses.append((node, i))
        for v in node.outputs:
            v.producer = node
            self._names.add(v.name)
        self.nodes.append(node)
        return node

    def fresh_name(self, base: str) -> str:
        name = base
        i = 0
        while name in self._names:
            i += 1
            name = f"{base}_{i}"
        self._names.add(name)
        return name

    # ---- mutation helpers for passes ----------------------------------
    def remove_node(self, node: Node) -> None:
        for i, v in enumerate(node.inputs):
            if v is not None:
                v.uses = [(n, j) for (n, j) in v.uses if not (n is node and j == i)]
        self.nodes.remove(node)

    def replace_all_uses(self, old: Value, new: Value) -> None:
        for node, i in list(old.uses):
            node.inputs[i] = new
            new.uses.append((node, i))
        old.uses = []
        self.outputs = [new if o is old else o for o in self.outputs]
        for node in self.nodes:  # bodies that captured ``old`` now capture ``new``
            for sg in node.subgraphs.values():
                sg._replace_capture(old, new)

    def _replace_capture(self, old: Value, new: Value) -> None:
        if any(c is old for c in self.captures):
            if any(c is new for c in self.captures):
                self.captures = [c for c in self.captures if c is not old]
            else:
                self.captures = [new if c is old else c for c in self.captures]
        self.outputs = [new if o is old else o for o in self.outputs]
        for node in self.nodes:
            for sg in node.subgraphs.values():
                sg._replace_capture(old, new)

    # ---- queries --------------------------------------------------------
    def iter_nodes_recursive(self) -> Iterator[Node]:
        for n in self.nodes:
            yield n
            for sg in n.subgraphs.values():
                yield from sg.iter_nodes_recursive()

    def op_histogram(self) -> dict[str, int]:
        hist: dict[str, int] = {}
        for n in self.iter_nodes_recursive():
            hist[n.qualified_op] = hist.get(n.qualified_op, 0) + 1
        return dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0])))

    def all_values(self) -> Iterable[Value]:
        seen: set[int] = set()
        for v in [*self.inputs, *self.constants.values(), *self.captures]:
            if id(v) not in seen:
                seen.add(id(v))
                yield v
        for n in self.nodes:
            for v in n.outputs:
                if id(v) not in seen:
                    seen.add(id(v))
                    yield v

    def weight_bytes(self) -> int:
        total = sum(v.const.nbytes for v in self.constants.values() if v.const is not None)
        for n in self.nodes:
            for sg in n.subgraphs.values():
                total += sg.weight_bytes()
        return total
